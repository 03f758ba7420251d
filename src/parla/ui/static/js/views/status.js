// Status: the server's health, each engine's state and capabilities (GET /health, /v1/models),
// loading and unloading engines (POST /v1/load-model, /v1/unload-model), the job queue.

import { call, getJSON } from "../api.js";
import { $, busy, h, showError, toast } from "../dom.js";
import { loadModels } from "../store.js";

let root;
let timer = null;
let shown = ""; // what is on screen, so a refresh that changes nothing keeps focus where it is

export function mount(section) {
  root = section;
  section.innerHTML = `
    <h2 id="h-status" tabindex="-1">Status</h2>
    <p class="error" role="alert" id="status-error" hidden></p>
    <div class="card" id="status-summary" aria-live="polite"><p class="hint">Loading…</p></div>
    <div class="card">
      <div class="row-between"><h3>Engines</h3><button type="button" class="secondary small" id="status-refresh">Refresh</button></div>
      <div class="table-wrap">
        <table class="engines">
          <caption class="visually-hidden">Speech engines and their state</caption>
          <thead><tr><th scope="col">Engine</th><th scope="col">State</th><th scope="col">Can do</th><th scope="col">Parameters</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
          <tbody id="engine-rows"></tbody>
        </table>
      </div>
    </div>
  `;
  $("#status-refresh", root).addEventListener("click", refresh);
}

export function show() {
  refresh();
  clearInterval(timer);
  timer = setInterval(refresh, 5000);
}

export function hide() {
  clearInterval(timer);
}

async function refresh() {
  const error = $("#status-error", root);
  try {
    const [health, models, queue] = await Promise.all([
      getJSON("/health"),
      loadModels(true),
      getJSON("/v1/queue/stats").catch(() => null),
    ]);
    showError(error, null);
    const key = JSON.stringify([health, models, queue]);
    if (key === shown) return;
    shown = key;
    renderSummary(health, queue);
    renderEngines(health, models);
  } catch (err) {
    showError(error, err);
  }
}

function mb(value) {
  return typeof value === "number" ? `${value.toFixed(0)} MB` : "–";
}

function renderSummary(health, queue) {
  const entries = [
    ["Server", health.status],
    ["Version", health.version],
    ["Default engine", `${health.default_engine}${health.model_loaded ? " (loaded)" : " (not loaded)"}`],
    ["Device", health.device],
    ["GPU", health.gpu_available ? "available" : "none"],
    ["GPU memory used", mb(health.vram_used_mb)],
  ];
  // Process memory, where the server reports it.
  for (const key of ["memory_rss_mb", "memory_used_mb", "ram_used_mb"]) if (key in health) entries.push(["Memory used", mb(health[key])]);
  if (queue) entries.push(["Job queue", `${queue.pending_jobs ?? 0} pending, ${queue.running_jobs ?? 0} running, ${queue.active_workers ?? 0} workers`]);
  if (health.broken_engines && Object.keys(health.broken_engines).length) {
    entries.push(["Broken engines", Object.entries(health.broken_engines).map(([k, v]) => `${k}: ${v}`).join("; ")]);
  }
  $("#status-summary", root).replaceChildren(
    h("h3", {}, "Server"),
    h("dl", { class: "stats" }, ...entries.map(([k, v]) => h("div", { class: k === "Job queue" || k === "Broken engines" ? "wide" : undefined }, h("dt", {}, k), h("dd", { class: k === "Server" ? `state ${v}` : undefined }, String(v ?? "–"))))),
  );
}

function renderEngines(health, models) {
  const byName = new Map(models.filter((m) => m.capabilities).map((m) => [m.id, m]));
  const rows = (health.engines || []).map((engine) => {
    const model = byName.get(engine.name);
    const caps = model ? model.capabilities : {};
    const can = [
      caps.streaming && "streaming",
      caps.cloning && "cloning",
      caps.dialogue && "dialogue",
      caps.instructions && "instructions",
      caps.nonverbal && "nonverbal",
      caps.sample_rate && `${caps.sample_rate / 1000} kHz`,
      caps.languages && `languages: ${caps.languages.join(", ")}`,
    ].filter(Boolean);
    const state = !engine.available ? "unavailable" : engine.loaded ? "loaded" : "not loaded";
    const act = (path, verb, done) =>
      h("button", {
        type: "button",
        class: "secondary small",
        disabled: !engine.available || engine.loaded === (verb === "Load"),
        "aria-label": `${verb} ${engine.name}`,
        onclick: async (event) => {
          try {
            await busy(event.currentTarget, `${verb}ing…`, () => call("POST", path, { params: { engine: engine.name } }));
            toast(`${engine.name} ${done}.`);
            refresh();
          } catch (err) {
            showError($("#status-error", root), err);
          }
        },
      }, verb);
    return h(
      "tr",
      { dataset: { engine: engine.name, state } },
      h("th", { scope: "row" }, engine.name, model?.description ? h("small", { class: "muted block" }, model.description) : null),
      h("td", {}, h("span", { class: `badge ${state.replace(" ", "-")}` }, state), engine.device ? ` ${engine.device}` : "", engine.reason ? h("small", { class: "muted block" }, engine.reason) : null),
      h("td", {}, can.join(" · ") || "–"),
      h("td", {}, (caps.parameters || []).map((p) => `${p.name}${p.minimum !== null && p.maximum !== null ? ` ${p.minimum}–${p.maximum}` : ""}`).join(", ") || "–"),
      h("td", {}, h("span", { class: "actions" }, act("/v1/load-model", "Load", "loaded"), act("/v1/unload-model", "Unload", "unloaded"))),
    );
  });
  $("#engine-rows", root).replaceChildren(...rows);
}
