// Dialogue: turns with a voice each, spoken as one recording by POST /v1/audio/dialogue
// (?output=json gives each turn's start and end), played back with the current turn marked.

import { call } from "../api.js";
import { base64Bytes, Player } from "../audio.js";
import { $, fillSelect, h, seconds, showError } from "../dom.js";
import { bindEngineSelect, loadModels, loadVoices, voiceOptions } from "../store.js";

let root;
let player;
let turns = [
  { voice: "alloy", text: "Did you hear? The studio can speak a whole conversation now." },
  { voice: "nova", text: "I did! Each of us gets a voice of our own." },
];
let result = [];

export function mount(section) {
  root = section;
  section.innerHTML = `
    <h2 id="h-dialogue" tabindex="-1">Dialogue</h2>
    <form class="card stack" id="dialogue-form" novalidate>
      <h3>Turns</h3>
      <ol class="turns" id="dialogue-turns" aria-label="Turns, in the order they are spoken"></ol>
      <div class="actions"><button type="button" class="secondary" id="dialogue-add">Add a turn</button></div>
      <p class="hint">Nonverbal cues such as (laughs) or (sighs) become short pauses where the engine cannot voice them.</p>
      <div class="grid">
        <div class="field"><label for="dialogue-engine">Engine</label><select id="dialogue-engine"></select></div>
        <div class="field"><label for="dialogue-format">Format</label>
          <select id="dialogue-format"><option value="wav">WAV</option><option value="mp3">MP3</option><option value="flac">FLAC</option><option value="opus">Opus</option></select></div>
        <div class="field"><label for="dialogue-pause">Pause between turns (s)</label>
          <input id="dialogue-pause" type="number" min="0" max="5" step="0.05" value="0.35"></div>
        <div class="field"><label for="dialogue-speed">Speed</label>
          <input id="dialogue-speed" type="number" min="0.25" max="4" step="0.05" value="1"></div>
      </div>
      <div class="actions"><button type="submit" id="dialogue-generate">Generate dialogue</button></div>
      <p class="error" role="alert" id="dialogue-error" hidden></p>
    </form>
    <div class="card" id="dialogue-output">
      <h3>Result</h3>
      <ol class="script" id="dialogue-script" aria-label="Spoken turns; the one playing is marked"></ol>
    </div>
  `;
  player = new Player({ label: "Dialogue" });
  $("#dialogue-output", root).insertBefore(player.el, $("#dialogue-script", root));
  player.onTime(markTurn);
  bindEngineSelect($("#dialogue-engine", root));
  window.addEventListener("parla:voices", renderTurns);
  $("#dialogue-add", root).addEventListener("click", () => {
    const last = turns[turns.length - 1];
    const other = turns.length > 1 ? turns[turns.length - 2].voice : "nova";
    turns.push({ voice: other || last?.voice || "alloy", text: "" });
    renderTurns();
    root.querySelector("#dialogue-turns li:last-child textarea").focus();
  });
  $("#dialogue-form", root).addEventListener("submit", (event) => {
    event.preventDefault();
    generate();
  });
  renderTurns();
}

export function show() {
  Promise.all([loadVoices(), loadModels()]).catch((err) => showError($("#dialogue-error", root), err));
}

function renderTurns() {
  const list = $("#dialogue-turns", root);
  const options = voiceOptions();
  list.replaceChildren(
    ...turns.map((turn, i) => {
      const n = i + 1;
      const voice = h("select", { id: `turn-${n}-voice`, class: "turn-voice", onchange: (e) => (turn.voice = e.target.value) });
      fillSelect(voice, options.length ? options : [{ value: turn.voice }], { keep: false });
      voice.value = turn.voice;
      if (voice.value !== turn.voice) turn.voice = voice.value;
      const text = h("textarea", { id: `turn-${n}-text`, class: "turn-text", rows: 2, oninput: (e) => (turn.text = e.target.value) });
      text.value = turn.text;
      const move = (delta) => {
        const j = i + delta;
        [turns[i], turns[j]] = [turns[j], turns[i]];
        renderTurns();
        const buttons = list.children[j].querySelectorAll(".turn-tools button");
        (delta < 0 ? buttons[0] : buttons[1]).focus();
      };
      return h(
        "li",
        { class: "turn" },
        h("div", { class: "turn-head" },
          h("label", { for: `turn-${n}-voice` }, `Turn ${n} voice`),
          voice,
          h("span", { class: "turn-tools" },
            h("button", { type: "button", class: "icon", "aria-label": `Move turn ${n} up`, title: "Move up", disabled: i === 0, onclick: () => move(-1) }, "↑"),
            h("button", { type: "button", class: "icon", "aria-label": `Move turn ${n} down`, title: "Move down", disabled: i === turns.length - 1, onclick: () => move(1) }, "↓"),
            h("button", {
              type: "button",
              class: "icon danger",
              "aria-label": `Remove turn ${n}`,
              title: "Remove",
              disabled: turns.length === 1,
              onclick: () => {
                turns.splice(i, 1);
                renderTurns();
                list.querySelector("button:not([disabled])")?.focus();
              },
            }, "✕"),
          ),
        ),
        h("label", { for: `turn-${n}-text`, class: "visually-hidden" }, `Turn ${n} text`),
        text,
      );
    }),
  );
}

async function generate() {
  const error = $("#dialogue-error", root);
  showError(error, null);
  const spoken = turns.filter((t) => t.text.trim());
  if (!spoken.length) {
    showError(error, new Error("Write at least one turn."));
    return;
  }
  const format = $("#dialogue-format", root).value;
  const request = {
    turns: spoken.map((t) => ({ voice: t.voice, text: t.text.trim() })),
    response_format: format,
    pause_s: Number($("#dialogue-pause", root).value || 0.35),
    speed: Number($("#dialogue-speed", root).value || 1),
  };
  const engine = $("#dialogue-engine", root).value;
  if (engine) request.model = engine;
  const button = $("#dialogue-generate", root);
  const controller = player.begin();
  player.set("loading", `Speaking ${spoken.length} turns…`);
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    const response = await call("POST", "/v1/audio/dialogue", { json: request, params: { output: "json" }, signal: controller.signal });
    const answer = await response.json();
    result = answer.turns;
    renderScript();
    const blob = new Blob([base64Bytes(answer.audio)], { type: format === "mp3" ? "audio/mpeg" : `audio/${format === "opus" ? "ogg" : format}` });
    player.el.dataset.generationId = answer.generation_id;
    await player.playBlob(blob, `dialogue.${format}`, {
      regions: result.map((t) => ({ start: t.start, end: t.end, label: t.voice })),
    });
  } catch (err) {
    if (err.name !== "AbortError") {
      showError(error, err);
      player.fail(err);
    }
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

function renderScript() {
  $("#dialogue-script", root).replaceChildren(
    ...result.map((turn, i) =>
      h(
        "li",
        { dataset: { turn: String(i), start: String(turn.start), end: String(turn.end) } },
        h("button", { type: "button", class: "link", onclick: () => playFrom(turn.start), "aria-label": `Play from turn ${i + 1}` },
          `${seconds(turn.start)}–${seconds(turn.end)}`),
        " ",
        h("strong", {}, turn.voice),
        ": ",
        h("span", {}, turn.text),
      ),
    ),
  );
}

function playFrom(time) {
  player.seek(time);
  player.audio.play().catch(() => {});
}

function markTurn(at) {
  const items = root.querySelectorAll("#dialogue-script li");
  items.forEach((item) => {
    const active = at >= Number(item.dataset.start) && at < Number(item.dataset.end);
    if (active) item.setAttribute("aria-current", "true");
    else item.removeAttribute("aria-current");
  });
}
