// Characters (the Titans character API): create, edit and delete characters, then talk with them by text
// or microphone and hear the answers. Text questions go to POST /ask-question-stream (the answer
// and its speech arrive as server-sent events) and fall back to /ask-question-text on servers
// without it; spoken questions go to POST /ask-question-audio.

import { apiUrl, call, events, getJSON, postForm, remove } from "../api.js";
import { base64Bytes, Feed, Player } from "../audio.js";
import { $, busy, fillSelect, h, showError, toast, when } from "../dom.js";
import { bindVoiceSelect, loadVoices } from "../store.js";
import { startRecording } from "./voices.js";

let root;
let characters = [];
let editing = null; // the id of the character the form edits, or null to create
let player;
let recording = null;
let initial = {}; // the form's values when editing began: only what changed is sent
const MASKED = "********"; // how the server shows a stored API key

export function mount(section) {
  root = section;
  section.innerHTML = `
    <h2 id="h-characters" tabindex="-1">Characters</h2>
    <p class="error" role="alert" id="characters-error" hidden></p>
    <div class="columns">
      <div class="stack">
        <div class="card">
          <h3>Characters</h3>
          <ul class="list characters" id="character-list" aria-label="Characters"></ul>
          <p class="hint" id="characters-empty" hidden>No characters yet: create one below.</p>
        </div>
        <form class="card stack" id="character-form" novalidate>
          <h3 id="character-form-title">New character</h3>
          <div class="field"><label for="character-name">Name</label><input id="character-name" name="name" required maxlength="100"></div>
          <div class="field"><label for="character-prompt">Personality <small class="hint">(system prompt)</small></label>
            <textarea id="character-prompt" name="system_prompt" rows="3" placeholder="You are a cheerful museum guide who answers in two sentences."></textarea></div>
          <div class="field"><label for="character-model">Language model <small class="hint">(empty: the embedded default)</small></label>
            <input id="character-model" name="llm_model" placeholder="e.g. gpt-4o-mini with an endpoint below"></div>
          <div class="grid">
            <div class="field"><label for="character-voice">Voice</label><select id="character-voice" name="voice"></select></div>
            <div class="field"><label for="character-voice-audio">Or a recording to clone</label>
              <input id="character-voice-audio" name="voice_cloning_audio" type="file" accept="audio/*,video/webm"></div>
            <div class="field"><label for="character-voice-text">What the recording says <small class="hint">(optional)</small></label>
              <input id="character-voice-text" name="reference_text"></div>
            <div class="field"><label for="character-image">Picture</label>
              <input id="character-image" name="character_image" type="file" accept="image/*"></div>
            <div class="field"><label for="character-knowledge">Knowledge <small class="hint">(TXT, JSON, PDF)</small></label>
              <input id="character-knowledge" name="knowledge_base_file" type="file" accept=".txt,.json,.pdf,.md,text/*,application/json,application/pdf"></div>
            <div class="field"><label for="character-style">Style examples <small class="hint">(JSON)</small></label>
              <input id="character-style" name="style_tuning_file" type="file" accept=".json,application/json"></div>
          </div>
          <details>
            <summary>Advanced settings (JSON)</summary>
            <div class="field"><label for="character-llm-config">llm_config</label>
              <textarea id="character-llm-config" name="llm_config" rows="3" class="mono" placeholder='{"base_url": "http://127.0.0.1:8080/v1", "model_name": "...", "temperature": 0.7, "max_tokens": 200}'></textarea></div>
            <div class="field"><label for="character-voice-settings">voice_cloning_settings</label>
              <textarea id="character-voice-settings" name="voice_cloning_settings" rows="2" class="mono" placeholder='{"language": "en"}'></textarea></div>
            <div class="field"><label for="character-stt-settings">stt_settings</label>
              <textarea id="character-stt-settings" name="stt_settings" rows="2" class="mono" placeholder='{"language": "en"}'></textarea></div>
          </details>
          <div class="actions">
            <button type="submit" id="character-save">Create character</button>
            <button type="button" class="secondary" id="character-cancel" hidden>Cancel editing</button>
          </div>
        </form>
      </div>
      <div class="card stack" id="chat">
        <h3>Talk</h3>
        <div class="field"><label for="chat-character">Character</label><select id="chat-character"></select></div>
        <ol class="chat" id="chat-log" role="log" aria-live="polite" aria-label="Conversation"></ol>
        <form class="chat-input" id="chat-form" novalidate>
          <label for="chat-question" class="visually-hidden">Your question</label>
          <input id="chat-question" autocomplete="off" placeholder="Ask something…">
          <button type="submit" id="chat-send">Send</button>
          <button type="button" class="secondary" id="chat-mic" aria-pressed="false">Speak</button>
        </form>
        <p class="hint" id="chat-status" aria-live="polite"></p>
      </div>
    </div>
  `;
  bindVoiceSelect($("#character-voice", root), { placeholder: "Default voice" });
  player = new Player({ label: "The character's answer" });
  $("#chat", root).append(player.el);
  $("#character-form", root).addEventListener("submit", save);
  $("#character-cancel", root).addEventListener("click", () => startEditing(null));
  $("#chat-form", root).addEventListener("submit", (event) => {
    event.preventDefault();
    ask();
  });
  $("#chat-mic", root).addEventListener("click", toggleMic);
}

export function show() {
  loadVoices().catch(() => {});
  refresh();
}

export function hide() {
  if (recording) {
    recording.discard = true;
    recording.media.stop();
    recording = null;
  }
}

async function refresh() {
  const error = $("#characters-error", root);
  try {
    characters = (await getJSON("/get-characters")).characters || [];
    showError(error, null);
  } catch (err) {
    characters = [];
    showError(error, err.status === 404 ? new Error(`Characters are not available on this server: ${err.message}`) : err);
  }
  renderList();
}

function renderList() {
  $("#character-list", root).replaceChildren(
    ...characters.map((c) =>
      h(
        "li",
        { class: "character", dataset: { characterId: String(c.id) } },
        c.image_url ? h("img", { src: new URL(c.image_url, apiUrl("/")).toString(), alt: "", width: 48, height: 48 }) : h("span", { class: "avatar", "aria-hidden": "true" }, c.name.slice(0, 1).toUpperCase()),
        h("span", { class: "grow" }, h("strong", {}, c.name), h("br"), h("small", { class: "muted" }, `${c.llm_model || "default model"} · ${when(c.created_at)}`)),
        h("span", { class: "actions" },
          h("button", { type: "button", class: "small", onclick: () => chatWith(c.id), "aria-label": `Talk with ${c.name}` }, "Talk"),
          h("button", { type: "button", class: "secondary small", onclick: () => startEditing(c.id), "aria-label": `Edit ${c.name}` }, "Edit"),
          h("button", {
            type: "button",
            class: "danger small",
            "aria-label": `Delete ${c.name}`,
            onclick: async (event) => {
              if (!confirm(`Delete the character “${c.name}”?`)) return;
              try {
                await busy(event.currentTarget, "Deleting…", () => remove(`/delete-character/${encodeURIComponent(c.id)}`));
                toast(`Deleted “${c.name}”.`);
                if (editing === c.id) startEditing(null);
                refresh();
              } catch (err) {
                showError($("#characters-error", root), err);
              }
            },
          }, "Delete"),
        ),
      ),
    ),
  );
  $("#characters-empty", root).hidden = characters.length > 0;
  fillSelect($("#chat-character", root), characters.map((c) => ({ value: String(c.id), label: c.name })), { placeholder: characters.length ? undefined : "No characters" });
}

function chatWith(id) {
  $("#chat-character", root).value = String(id);
  $("#chat-question", root).focus();
}

async function startEditing(id) {
  const form = $("#character-form", root);
  form.reset();
  editing = id;
  $("#character-form-title", root).textContent = id === null ? "New character" : "Edit character";
  $("#character-save", root).textContent = id === null ? "Create character" : "Save changes";
  $("#character-cancel", root).hidden = id === null;
  initial = {};
  if (id === null) return;
  try {
    const { character } = await getJSON(`/get-character/${encodeURIComponent(id)}`);
    const config = character.llm_config || {};
    form.elements.name.value = character.name || "";
    form.elements.llm_model.value = character.llm_model || "";
    form.elements.system_prompt.value = config.system_prompt || "";
    const { system_prompt: _, ...rest } = config;
    form.elements.llm_config.value = Object.keys(rest).length ? JSON.stringify(rest, null, 1) : "";
    const { reference_text: text, voice: chosen, ...voice } = character.voice_cloning_settings || {};
    form.elements.reference_text.value = text || "";
    form.elements.voice.value = chosen || "";
    form.elements.voice_cloning_settings.value = Object.keys(voice).length ? JSON.stringify(voice) : "";
    form.elements.stt_settings.value = character.stt_settings ? JSON.stringify(character.stt_settings) : "";
    for (const name of EDITABLE) initial[name] = form.elements[name].value;
    form.elements.name.focus();
  } catch (err) {
    showError($("#characters-error", root), err);
  }
}

function jsonField(form, name) {
  const text = form.elements[name].value.trim();
  if (!text) return {};
  try {
    const value = JSON.parse(text);
    if (value && typeof value === "object" && !Array.isArray(value)) return value;
  } catch {
    /* reported below */
  }
  form.elements[name].focus();
  throw new Error(`${name} must be a JSON object, like {"key": "value"}`);
}

const EDITABLE = ["name", "llm_model", "system_prompt", "llm_config", "voice", "reference_text", "voice_cloning_settings", "stt_settings"];

async function save(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const error = $("#characters-error", root);
  showError(error, null);
  try {
    const name = form.elements.name.value.trim();
    if (!name && editing === null) {
      form.elements.name.focus();
      throw new Error("A character needs a name.");
    }
    // Creating sends what is filled in; editing sends only what changed (a field left out is kept).
    const changed = (...names) => names.some((n) => (editing === null ? form.elements[n].value.trim() !== "" : form.elements[n].value !== initial[n]));
    const llm = jsonField(form, "llm_config");
    if (form.elements.system_prompt.value.trim()) llm.system_prompt = form.elements.system_prompt.value.trim();
    if (llm.api_key === MASKED) {
      form.elements.llm_config.focus();
      throw new Error("llm_config: type the API key again (a stored key is never shown back), or remove it");
    }
    const voice = jsonField(form, "voice_cloning_settings");
    if (form.elements.reference_text.value.trim()) voice.reference_text = form.elements.reference_text.value.trim();
    if (form.elements.voice.value) voice.voice = form.elements.voice.value;
    const stt = jsonField(form, "stt_settings");
    const data = new FormData();
    if (name && changed("name")) data.append("name", name);
    if (changed("llm_model")) data.append("llm_model", form.elements.llm_model.value.trim());
    if (changed("system_prompt", "llm_config")) data.append("llm_config", JSON.stringify(llm));
    if (changed("voice", "reference_text", "voice_cloning_settings")) data.append("voice_cloning_settings", JSON.stringify(voice));
    if (changed("stt_settings")) data.append("stt_settings", JSON.stringify(stt));
    for (const field of ["character_image", "knowledge_base_file", "voice_cloning_audio", "style_tuning_file"]) {
      const file = form.elements[field].files[0];
      if (file) data.append(field, file, file.name);
    }
    const button = $("#character-save", root);
    if (editing === null) {
      const answer = await busy(button, "Creating…", () => postForm("/create-character", data));
      toast(`Character “${name}” created.`);
      await refresh();
      form.reset();
      if (answer && answer.character_id !== undefined) chatWith(answer.character_id);
    } else {
      await busy(button, "Saving…", () => postForm(`/update-character/${encodeURIComponent(editing)}`, data, "PUT"));
      toast("Character saved.");
      startEditing(null);
      await refresh();
    }
  } catch (err) {
    showError(error, err);
  }
}

// -- the conversation -------------------------------------------------------------------------

function exchange(question) {
  const answer = h("p", { class: "answer-text" });
  const context = h("details", { class: "context", hidden: true }, h("summary", {}, "What it looked up"), h("pre", {}));
  const audio = h("div", { class: "answer-audio" });
  const you = h("li", { class: "bubble you" }, h("span", { class: "visually-hidden" }, "You: "), h("span", { class: "q" }, question));
  const them = h("li", { class: "bubble them", "aria-busy": "true" }, h("span", { class: "who" }, `${selectedName()}: `), answer, context, audio);
  $("#chat-log", root).append(you, them);
  them.scrollIntoView({ block: "nearest" });
  return {
    question: (text) => (you.querySelector(".q").textContent = text),
    append: (text) => (answer.textContent += text),
    text: (text) => (answer.textContent = text),
    context: (text) => {
      if (!text) return;
      context.querySelector("pre").textContent = text;
      context.hidden = false;
    },
    audio: (url) => {
      if (!url) return;
      audio.replaceChildren(h("audio", { controls: true, preload: "metadata", src: new URL(url, apiUrl("/")).toString(), "aria-label": "Replay the answer" }));
    },
    done: () => them.removeAttribute("aria-busy"),
    fail: (err) => {
      answer.textContent = "";
      answer.append(h("span", { class: "error" }, err.message || String(err)));
      them.removeAttribute("aria-busy");
    },
  };
}

function selectedName() {
  const select = $("#chat-character", root);
  return select.selectedOptions[0]?.textContent || "Character";
}

function characterId() {
  const value = $("#chat-character", root).value;
  if (!value) throw new Error("Create a character first, then choose it here.");
  return /^\d+$/.test(value) ? Number(value) : value;
}

async function ask() {
  const input = $("#chat-question", root);
  const question = input.value.trim();
  const status = $("#chat-status", root);
  if (!question) {
    input.focus();
    return;
  }
  let id;
  try {
    id = characterId();
  } catch (err) {
    status.textContent = err.message;
    return;
  }
  input.value = "";
  const turn = exchange(question);
  const send = $("#chat-send", root);
  send.disabled = true;
  const controller = player.begin();
  try {
    let response;
    try {
      response = await call("POST", "/ask-question-stream", { json: { character_id: id, question }, signal: controller.signal, headers: { Accept: "text/event-stream" } });
    } catch (err) {
      if (err.status !== 404 && err.status !== 405) throw err;
      // A server without the streaming endpoint: the whole answer at once.
      const answer = await (await call("POST", "/ask-question-text", { json: { character_id: id, question } })).json();
      return showAnswer(answer, turn);
    }
    await streamAnswer(response, turn);
  } catch (err) {
    if (err.name !== "AbortError") turn.fail(err);
    else turn.done();
  } finally {
    send.disabled = false;
  }
}

/** Follow an answer's events: the text as it is written, the speech as each sentence is ready. */
async function streamAnswer(response, turn) {
  const speech = new Feed();
  const playing = player.playPcm(speech, 24000, "answer.wav").catch(() => {});
  try {
    for await (const { event, data } of events(response)) {
      if (event === "answer.delta") turn.append(data.delta || "");
      else if (event === "speech.audio.delta") speech.push(base64Bytes(data.audio));
      else if (event === "answer.done") {
        if (data.text) turn.text(data.text);
        turn.context(data.knowledge_context);
      } else if (event === "speech.audio.done") {
        if (data.transcribed_question) turn.question(data.transcribed_question);
        turn.audio(data.audio_url);
      } else if (event === "error") throw new Error(data.detail || data.message || "the character could not answer");
    }
  } finally {
    speech.end();
  }
  await playing;
  turn.done();
}

function showAnswer(answer, turn) {
  if (answer.transcribed_question) turn.question(answer.transcribed_question);
  turn.text(answer.text_response || "");
  turn.context(answer.knowledge_context);
  turn.audio(answer.audio_url);
  turn.done();
  if (answer.audio_url) {
    fetch(new URL(answer.audio_url, apiUrl("/")))
      .then((r) => r.blob())
      .then((blob) => player.playBlob(blob, "answer.wav"))
      .catch(() => {});
  }
}

async function toggleMic() {
  const button = $("#chat-mic", root);
  const status = $("#chat-status", root);
  if (recording) {
    recording.media.stop();
    return;
  }
  let id;
  try {
    id = characterId();
  } catch (err) {
    status.textContent = err.message;
    return;
  }
  try {
    recording = await startRecording(
      async (blob) => {
        recording = null;
        button.textContent = "Speak";
        button.setAttribute("aria-pressed", "false");
        status.textContent = "Listening to your question…";
        const turn = exchange("(your recording)");
        const data = new FormData();
        data.append("character_id", String(id));
        data.append("audio_file", blob, `question.${blob.type.includes("ogg") ? "ogg" : "webm"}`);
        data.append("stream", "true");
        try {
          const controller = player.begin();
          const response = await call("POST", "/ask-question-audio", { form: data, signal: controller.signal, headers: { Accept: "text/event-stream" } });
          status.textContent = "";
          if ((response.headers.get("Content-Type") || "").startsWith("text/event-stream")) await streamAnswer(response, turn);
          else showAnswer(await response.json(), turn); // a server that answers in one piece
        } catch (err) {
          if (err.name !== "AbortError") turn.fail(err);
          status.textContent = "";
        }
      },
      (elapsed) => (status.textContent = `Recording… ${elapsed.toFixed(0)} s. Press Stop when you are done.`),
    );
    button.textContent = "Stop";
    button.setAttribute("aria-pressed", "true");
  } catch (err) {
    status.textContent = `The microphone is not available: ${err.message}`;
  }
}
