// Speak: text to speech with any voice and engine, heard while it is being made.
// Calls POST /v1/audio/speech (streamed; with "Word timings", as server-sent events carrying the
// audio and each word's times), reads GET /v1/models for each engine's parameters, and links
// GET /v1/history/{id}/captions for the captions of a timed generation.

import { apiUrl, call, events } from "../api.js";
import { base64Bytes, Player } from "../audio.js";
import { $, h, showError, uid } from "../dom.js";
import { bindEngineSelect, bindVoiceSelect, engines, loadModels, loadVoices } from "../store.js";

const FORMATS = [
  ["mp3", "MP3 (streams)"],
  ["pcm", "PCM 24 kHz (streams, saved as WAV)"],
  ["wav", "WAV (streams)"],
  ["opus", "Opus"],
  ["aac", "AAC"],
  ["flac", "FLAC"],
];

let root;
let player;
let paramInputs = new Map();
let paramsShown = null; // the engine and parameters on screen (values typed in survive a reload)
let words = []; // the timed words on screen: {start, end, el}
let currentWord = -1;

export function mount(section) {
  root = section;
  section.innerHTML = `
    <h2 id="h-speak" tabindex="-1">Speak</h2>
    <form class="card stack" id="speak-form" novalidate>
      <div class="field">
        <label for="speak-text">Text</label>
        <textarea id="speak-text" name="input" rows="5" required maxlength="100000"
          placeholder="Type what to say. Long texts are split into sentences and stream as they are spoken."></textarea>
        <small class="hint" id="speak-count" aria-live="off">0 characters</small>
      </div>
      <div class="grid">
        <div class="field"><label for="speak-voice">Voice</label><select id="speak-voice" name="voice"></select></div>
        <div class="field"><label for="speak-engine">Engine</label><select id="speak-engine" name="model"></select></div>
        <div class="field"><label for="speak-format">Format</label><select id="speak-format" name="response_format"></select></div>
        <div class="field">
          <span class="check"><input id="speak-timestamps" name="timestamps" type="checkbox" aria-describedby="speak-timestamps-hint">
            <label for="speak-timestamps">Word timings</label></span>
          <small class="hint" id="speak-timestamps-hint">Show each word as it is spoken; captions to download.</small>
        </div>
        <div class="field">
          <label for="speak-speed">Speed <output id="speak-speed-out" for="speak-speed">1.00×</output></label>
          <input id="speak-speed" name="speed" type="range" min="0.25" max="4" step="0.05" value="1">
        </div>
      </div>
      <details id="speak-more">
        <summary>More settings</summary>
        <div class="grid">
          <div class="field"><label for="speak-seed">Seed <small class="hint">(same seed, same audio)</small></label>
            <input id="speak-seed" name="seed" type="number" min="0" max="2147483647" step="1" placeholder="random"></div>
          <div class="field"><label for="speak-language">Language</label>
            <input id="speak-language" name="language" type="text" placeholder="the voice's" maxlength="16"></div>
          <div class="field wide"><label for="speak-instructions">Instructions</label>
            <input id="speak-instructions" name="instructions" type="text" placeholder="e.g. slowly, expressive (used where the engine can)"></div>
        </div>
        <fieldset id="speak-params" class="params">
          <legend>Engine parameters</legend>
          <p class="hint" id="speak-params-hint">Pick an engine to set its own parameters.</p>
          <div class="grid" id="speak-params-list"></div>
          <button type="button" class="secondary small" id="speak-params-reset" hidden>Reset to defaults</button>
        </fieldset>
      </details>
      <div class="actions">
        <button type="submit" id="speak-generate">Generate</button>
      </div>
      <p class="error" role="alert" id="speak-error" hidden></p>
    </form>
    <div class="card" id="speak-output"><h3>Result</h3></div>
  `;
  const format = $("#speak-format", root);
  for (const [value, label] of FORMATS) format.append(h("option", { value }, label));
  bindVoiceSelect($("#speak-voice", root), { placeholder: "Default voice" });
  bindEngineSelect($("#speak-engine", root), { filter: (m) => m.capabilities.single_speaker });
  window.addEventListener("parla:models", renderParams);
  player = new Player({ label: "Generated speech" });
  $("#speak-output", root).append(
    player.el,
    h("div", { class: "words", id: "speak-words", role: "group", "aria-label": "Words with their times", hidden: true }),
    h("p", { class: "captions", id: "speak-captions", hidden: true }),
  );
  player.onTime(markWord);

  const text = $("#speak-text", root);
  text.addEventListener("input", () => ($("#speak-count", root).textContent = `${text.value.length} characters`));
  const speed = $("#speak-speed", root);
  speed.addEventListener("input", () => ($("#speak-speed-out", root).textContent = `${Number(speed.value).toFixed(2)}×`));
  $("#speak-engine", root).addEventListener("change", renderParams);
  $("#speak-params-reset", root).addEventListener("click", () => {
    for (const [, input] of paramInputs) input.reset();
  });
  $("#speak-form", root).addEventListener("submit", (event) => {
    event.preventDefault();
    generate();
  });
  text.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      generate();
    }
  });
}

export function show() {
  Promise.all([loadVoices(), loadModels()]).catch((err) => showError($("#speak-error", root), err));
}

/** One control per parameter the chosen engine declares, with its range and default. */
function renderParams() {
  const list = $("#speak-params-list", root);
  const chosen = $("#speak-engine", root).value;
  const model = engines().find((m) => m.id === chosen);
  const params = model ? model.capabilities.parameters : [];
  const key = JSON.stringify([chosen, params]);
  if (key === paramsShown) return;
  paramsShown = key;
  list.replaceChildren();
  paramInputs = new Map();
  $("#speak-params-hint", root).textContent = !model
    ? "Pick an engine to set its own parameters."
    : params.length
      ? `${model.id}: ${model.description || ""}`
      : `${model.id} has no parameters of its own.`;
  $("#speak-params-reset", root).hidden = !params.length;
  for (const param of params) {
    const id = uid("param");
    const numeric = param.type === "float" || param.type === "int";
    let input;
    let read;
    const field = h("div", { class: "field" });
    const label = h("label", { for: id }, param.name);
    const describe = param.description ? h("small", { class: "hint", id: `${id}-hint` }, param.description) : null;
    if (param.type === "bool") {
      input = h("input", { id, type: "checkbox", checked: Boolean(param.default), "aria-describedby": describe && `${id}-hint` });
      read = () => input.checked;
      field.append(h("span", { class: "check" }, input, label), describe);
      paramInputs.set(param.name, { read, changed: () => input.checked !== Boolean(param.default), reset: () => (input.checked = Boolean(param.default)) });
      list.append(field);
      continue;
    }
    if (numeric) {
      const step = param.type === "int" ? 1 : stepFor(param);
      input = h("input", {
        id,
        type: "number",
        step,
        min: param.minimum ?? undefined,
        max: param.maximum ?? undefined,
        value: param.default ?? "",
        "aria-describedby": describe && `${id}-hint`,
      });
      const range = param.minimum !== null && param.maximum !== null
        ? h("input", { type: "range", min: param.minimum, max: param.maximum, step, value: param.default ?? param.minimum, "aria-hidden": "true", tabindex: "-1" })
        : null;
      if (range) {
        range.addEventListener("input", () => (input.value = range.value));
        input.addEventListener("input", () => (range.value = input.value));
      }
      read = () => (input.value === "" ? null : Number(input.value));
      const limits = param.minimum !== null || param.maximum !== null ? ` (${param.minimum ?? "…"} – ${param.maximum ?? "…"})` : "";
      label.append(h("small", { class: "hint" }, limits));
      field.append(label, h("div", { class: "range-pair" }, range, input), describe);
      paramInputs.set(param.name, {
        read,
        changed: () => input.value !== "" && Number(input.value) !== param.default,
        reset: () => {
          input.value = param.default ?? "";
          if (range) range.value = param.default ?? param.minimum;
        },
      });
    } else {
      input = h("input", { id, type: "text", value: param.default ?? "", "aria-describedby": describe && `${id}-hint` });
      read = () => input.value;
      field.append(label, input, describe);
      paramInputs.set(param.name, { read, changed: () => input.value !== (param.default ?? ""), reset: () => (input.value = param.default ?? "") });
    }
    list.append(field);
  }
}

function stepFor(param) {
  const span = (param.maximum ?? 1) - (param.minimum ?? 0);
  return span > 20 ? 0.5 : span > 2 ? 0.05 : 0.01;
}

function body() {
  const form = $("#speak-form", root);
  const value = (name) => form.elements[name].value.trim();
  const request = {
    input: $("#speak-text", root).value,
    voice: value("voice") || undefined,
    model: value("model") || "tts-1",
    response_format: value("response_format"),
    speed: Number(value("speed")),
  };
  if (value("seed") !== "") request.seed = Number(value("seed"));
  if (value("language")) request.language = value("language");
  if (value("instructions")) request.instructions = value("instructions");
  const parameters = {};
  for (const [name, input] of paramInputs) if (input.changed()) parameters[name] = input.read();
  if (Object.keys(parameters).length) request.parameters = parameters;
  return request;
}

async function generate() {
  const error = $("#speak-error", root);
  showError(error, null);
  const text = $("#speak-text", root);
  if (!text.value.trim()) {
    showError(error, new Error("Type some text to speak first."));
    text.focus();
    return;
  }
  const request = body();
  const timed = $("#speak-timestamps", root).checked;
  if (timed) Object.assign(request, { timestamps: true, stream_format: "sse" });
  const button = $("#speak-generate", root);
  const controller = player.begin();
  clearWords(timed);
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    const accept = timed ? "text/event-stream" : "*/*";
    const response = await call("POST", "/v1/audio/speech", { json: request, signal: controller.signal, headers: { Accept: accept } });
    const id = response.headers.get("X-Generation-Id") || "";
    player.el.dataset.generationId = id;
    if (timed) {
      await playEvents(response, request.response_format);
      seekable();
      if (id && player.el.dataset.state === "done") showCaptions(id);
    } else {
      await player.playResponse(response, request.response_format);
    }
  } catch (err) {
    if (err.name !== "AbortError") {
      showError(error, err);
      player.fail(err);
    }
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
    if (!words.length) $("#speak-words", root).hidden = true; // no placeholder left after a failure
    seekable();
  }
}

// -- word timings -------------------------------------------------------------------------------

/**
 * Follow the speech's server-sent events: the audio deltas go, decoded, into a stream the player
 * plays as it arrives (as it plays a plain audio response); the words go on the strip.
 * Rejects with what went wrong (an error event, a broken stream, Stop's AbortError).
 */
async function playEvents(response, format) {
  let audio;
  const stream = new ReadableStream({ start: (controller) => (audio = controller) });
  let failed = null; // the player's own failure, which also ends the reading
  const playing = player.playResponse(new Response(stream), format).then(
    () => null,
    (err) => (failed = err),
  );
  let failure = null;
  let done = false;
  try {
    for await (const { event, data } of events(response)) {
      if (failed) break;
      if (event === "speech.audio.done") done = true;
      else if (event === "speech.audio.delta") audio.enqueue(base64Bytes(data.audio));
      else if (event === "speech.audio.words") addWords(data.words || []);
      else if (event === "error") {
        const detail = data && typeof data === "object" ? data.detail || data.message || (data.error && data.error.message) : data;
        throw new Error(detail || "the speech could not be made");
      }
    }
    if (!done && !failed) throw new Error("the speech stream ended before it was done");
    audio.close();
  } catch (err) {
    failure = err;
    audio.error(err);
  }
  await playing;
  if (failure || failed) throw failure || failed;
}

/** Empty the strip (and the caption links); it shows while a timed generation is on screen. */
function clearWords(timed) {
  words = [];
  currentWord = -1;
  const strip = $("#speak-words", root);
  strip.replaceChildren();
  strip.hidden = !timed;
  strip.removeAttribute("data-seekable");
  const captions = $("#speak-captions", root);
  captions.replaceChildren();
  captions.hidden = true;
}

const time = (value) => Number(value).toFixed(2);

function addWords(list) {
  const strip = $("#speak-words", root);
  const canSeek = strip.dataset.seekable === "true";
  for (const item of list) {
    const start = Number(item.start_time);
    const end = Number(item.end_time);
    if (!item.word || !Number.isFinite(start) || !Number.isFinite(end)) continue;
    const entry = { start, end };
    entry.el = h(
      "button",
      {
        type: "button",
        class: "word",
        dataset: { start: String(start), end: String(end) },
        title: `${time(start)}–${time(end)} s`,
        "aria-disabled": canSeek ? undefined : "true",
        onclick: () => playFromWord(entry),
      },
      item.word,
    );
    words.push(entry);
    strip.append(entry.el, " ");
  }
  if (player.playing()) markWord(player.position());
}

/** The words can be clicked once the audio element has the audio (seeking live would cut it). */
function seekable() {
  const strip = $("#speak-words", root);
  if (!strip || !player.audio.getAttribute("src")) return;
  strip.dataset.seekable = "true";
  for (const word of words) word.el.removeAttribute("aria-disabled");
}

function playFromWord(word) {
  if ($("#speak-words", root).dataset.seekable !== "true") return;
  player.seek(word.start);
  markWord(word.start);
  player.audio.play().catch(() => {});
}

/** Highlight the word being spoken at `at` seconds (none between words). */
function markWord(at) {
  let index = -1;
  for (let i = 0; i < words.length; i++) {
    if (words[i].start > at + 0.005) break;
    index = i;
  }
  if (index >= 0 && at >= words[index].end) index = -1;
  if (index === currentWord) return;
  if (currentWord >= 0 && words[currentWord]) {
    words[currentWord].el.classList.remove("current");
    words[currentWord].el.removeAttribute("aria-current");
  }
  currentWord = index;
  if (index >= 0) {
    words[index].el.classList.add("current");
    words[index].el.setAttribute("aria-current", "true");
  }
}

/** Links to the generation's captions (the key, when there is one, goes as the studio's cookie). */
function showCaptions(id) {
  const captions = $("#speak-captions", root);
  const link = (format, label) =>
    h("a", { href: apiUrl(`/v1/history/${encodeURIComponent(id)}/captions`, { format }), download: `speech.${format}` }, label);
  captions.replaceChildren("Captions: ", link("srt", "SRT"), " · ", link("vtt", "WebVTT"));
  captions.hidden = false;
}
