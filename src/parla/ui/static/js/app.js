// The studio's shell: one view at a time, chosen by the URL's #hash (so the back button and
// bookmarks work). Each view module exports `mount(section)` (called once) and may export
// `show()` (called each time it becomes visible) and `hide()`.

import { getJSON } from "./api.js";
import { $, $$ } from "./dom.js";
import { loadModels, loadVoices } from "./store.js";
import * as characters from "./views/characters.js";
import * as dialogue from "./views/dialogue.js";
import * as history from "./views/history.js";
import * as jobs from "./views/jobs.js";
import * as speak from "./views/speak.js";
import * as status from "./views/status.js";
import * as voices from "./views/voices.js";

const VIEWS = { speak, voices, dialogue, history, jobs, characters, status };
const mounted = new Set();
let current = null;

function choose() {
  const name = location.hash.replace(/^#/, "").split("/")[0];
  return name in VIEWS ? name : "speak";
}

function render() {
  const name = choose();
  if (name === current) return;
  if (current && VIEWS[current].hide) VIEWS[current].hide();
  for (const link of $$("nav a[data-view]")) {
    if (link.dataset.view === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  for (const section of $$("main > .view")) section.hidden = section.id !== `view-${name}`;
  const section = $(`#view-${name}`);
  if (!mounted.has(name)) {
    mounted.add(name);
    VIEWS[name].mount(section);
  }
  const switching = current !== null;
  current = name;
  document.title = `${section.querySelector("h2")?.textContent || name} · Parla studio`;
  if (VIEWS[name].show) VIEWS[name].show();
  if (switching) section.querySelector("h2")?.focus({ preventScroll: false });
}

window.addEventListener("hashchange", render);
render();

// Shared lists; each view also shows its own error if they cannot load.
loadVoices().catch(() => {});
loadModels().catch(() => {});
getJSON("/health")
  .then((health) => ($("#version").textContent = health.version || ""))
  .catch(() => {});
