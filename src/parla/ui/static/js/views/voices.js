// Voices: the library under /v1/voices. Profiles (create, rename, delete, export, import) and
// their samples (upload or record, quality report, transcript correction, playback).

import { apiUrl, getJSON, postForm, remove, sendJSON } from "../api.js";
import { $, busy, h, seconds, showError, toast, uid } from "../dom.js";
import { loadVoices } from "../store.js";

let root;
let selected = null; // the voice id shown on the right
let recorder = null;

export function mount(section) {
  root = section;
  section.innerHTML = `
    <h2 id="h-voices" tabindex="-1">Voices</h2>
    <p class="error" role="alert" id="voices-error" hidden></p>
    <div class="columns">
      <div class="stack">
        <div class="card">
          <h3>Library</h3>
          <ul class="list selectable" id="voice-list" aria-label="Library voices"></ul>
          <p class="hint" id="voice-empty" hidden>No voices yet: create one below, then add a recording.</p>
          <details>
            <summary id="builtin-summary">Built-in voices</summary>
            <ul class="list compact" id="builtin-list"></ul>
          </details>
        </div>
        <form class="card stack" id="voice-create">
          <h3>New voice</h3>
          <div class="field"><label for="voice-new-name">Name</label>
            <input id="voice-new-name" name="name" required maxlength="100" autocomplete="off"></div>
          <div class="field"><label for="voice-new-description">Description <small class="hint">(optional)</small></label>
            <input id="voice-new-description" name="description" maxlength="2000"></div>
          <div class="field"><label for="voice-new-language">Language</label>
            <input id="voice-new-language" name="language" value="en" minlength="2" maxlength="16"></div>
          <div class="actions"><button type="submit">Create voice</button></div>
        </form>
        <form class="card stack" id="voice-import">
          <h3>Import a voice</h3>
          <div class="field"><label for="voice-import-file">Archive <small class="hint">(.parla-voice.zip from Export)</small></label>
            <input id="voice-import-file" name="file" type="file" accept=".zip,application/zip" required></div>
          <div class="field"><label for="voice-import-name">New name <small class="hint">(optional, if the name is taken)</small></label>
            <input id="voice-import-name" name="name" maxlength="100"></div>
          <div class="actions"><button type="submit">Import</button></div>
        </form>
      </div>
      <div class="card" id="voice-detail" aria-live="polite">
        <p class="hint">Choose a voice to see and edit its samples.</p>
      </div>
    </div>
  `;
  $("#voice-create", root).addEventListener("submit", createVoice);
  $("#voice-import", root).addEventListener("submit", importVoice);
  window.addEventListener("parla:voices", (event) => renderList(event.detail));
}

export function show() {
  const wanted = location.hash.split("/")[1];
  if (wanted) selected = decodeURIComponent(wanted);
  loadVoices(true).catch((err) => showError($("#voices-error", root), err));
  if (selected) renderDetail(selected);
}

export function hide() {
  stopRecording(true);
}

function renderList(voices) {
  const list = $("#voice-list", root);
  const library = voices.filter((v) => !v.builtin);
  const builtin = voices.filter((v) => v.builtin);
  list.replaceChildren(
    ...library.map((v) =>
      h(
        "li",
        {},
        h(
          "button",
          {
            type: "button",
            class: "item",
            "aria-current": v.id === selected ? "true" : undefined,
            dataset: { voiceId: v.id },
            onclick: () => select(v.id),
          },
          h("strong", {}, v.name),
          h("span", { class: "muted" }, ` ${v.samples} sample${v.samples === 1 ? "" : "s"} · ${seconds(v.total_duration_s)}`),
        ),
      ),
    ),
  );
  $("#voice-empty", root).hidden = library.length > 0;
  $("#builtin-summary", root).textContent = `Built-in voices (${builtin.length})`;
  $("#builtin-list", root).replaceChildren(
    ...builtin.map((v) => h("li", {}, h("strong", {}, v.name), h("span", { class: "muted" }, ` ${v.description}`))),
  );
}

function select(id) {
  selected = id;
  history.replaceState(null, "", `#voices/${encodeURIComponent(id)}`);
  for (const button of root.querySelectorAll("#voice-list button")) {
    if (button.dataset.voiceId === id) button.setAttribute("aria-current", "true");
    else button.removeAttribute("aria-current");
  }
  renderDetail(id).then(() => {
    // On a phone the details are below the lists: bring them into view.
    if (matchMedia("(max-width: 760px)").matches) $("#voice-detail", root).scrollIntoView({ block: "start" });
  });
}

async function createVoice(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const error = $("#voices-error", root);
  showError(error, null);
  const name = form.elements.name.value.trim();
  if (!name) {
    showError(error, new Error("A voice needs a name."));
    form.elements.name.focus();
    return;
  }
  try {
    const voice = await busy(form.querySelector("button"), "Creating…", () =>
      sendJSON("POST", "/v1/voices", {
        name,
        description: form.elements.description.value.trim() || null,
        language: form.elements.language.value.trim() || "en",
      }),
    );
    form.reset();
    toast(`Voice “${voice.name}” created. Add a recording of the speaker.`);
    await loadVoices(true);
    select(voice.id);
    $("#sample-file", root)?.focus();
  } catch (err) {
    showError(error, err);
  }
}

async function importVoice(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const error = $("#voices-error", root);
  showError(error, null);
  const file = form.elements.file.files[0];
  if (!file) {
    showError(error, new Error("Choose an exported voice archive first."));
    return;
  }
  const data = new FormData();
  data.append("file", file);
  if (form.elements.name.value.trim()) data.append("name", form.elements.name.value.trim());
  try {
    const voice = await busy(form.querySelector("button"), "Importing…", () => postForm("/v1/voices/import", data));
    form.reset();
    toast(`Imported “${voice.name}” with ${voice.samples.length} samples.`);
    await loadVoices(true);
    select(voice.id);
  } catch (err) {
    showError(error, err);
  }
}

// -- one voice --------------------------------------------------------------------------------

async function renderDetail(id) {
  const box = $("#voice-detail", root);
  let voice;
  try {
    voice = await getJSON(`/v1/voices/${encodeURIComponent(id)}`);
  } catch (err) {
    box.replaceChildren(h("p", { class: "error", role: "alert" }, err.message));
    return;
  }
  if (selected !== id) return; // another voice was chosen meanwhile
  const errorId = uid("voice-error");
  const error = h("p", { class: "error", role: "alert", id: errorId, hidden: true });
  const path = `/v1/voices/${encodeURIComponent(voice.id)}`;

  const nameInput = h("input", { id: "voice-edit-name", name: "name", value: voice.name, required: true, maxlength: 100 });
  const descInput = h("input", { id: "voice-edit-description", name: "description", value: voice.description || "" });
  const langInput = h("input", { id: "voice-edit-language", name: "language", value: voice.language, maxlength: 16 });
  const edit = h(
    "form",
    {
      class: "stack",
      id: "voice-edit",
      onsubmit: async (event) => {
        event.preventDefault();
        showError(error, null);
        try {
          await busy(event.submitter || edit.querySelector("button[type=submit]"), "Saving…", () =>
            sendJSON("PATCH", path, {
              name: nameInput.value.trim(),
              description: descInput.value.trim() || null,
              language: langInput.value.trim() || undefined,
            }),
          );
          toast("Voice saved.");
          await loadVoices(true);
          renderDetail(voice.id);
        } catch (err) {
          showError(error, err);
        }
      },
    },
    h("div", { class: "grid" },
      h("div", { class: "field" }, h("label", { for: "voice-edit-name" }, "Name"), nameInput),
      h("div", { class: "field" }, h("label", { for: "voice-edit-language" }, "Language"), langInput),
      h("div", { class: "field wide" }, h("label", { for: "voice-edit-description" }, "Description"), descInput),
    ),
    h("div", { class: "actions" },
      h("button", { type: "submit" }, "Save"),
      h("a", { class: "button secondary", href: apiUrl(`${path}/export`), download: "" }, "Export"),
      h("button", {
        type: "button",
        class: "danger",
        onclick: async (event) => {
          if (!confirm(`Delete the voice “${voice.name}” and all its samples?`)) return;
          try {
            await busy(event.currentTarget, "Deleting…", () => remove(path));
            toast(`Deleted “${voice.name}”.`);
            selected = null;
            history.replaceState(null, "", "#voices");
            box.replaceChildren(h("p", { class: "hint" }, "Choose a voice to see and edit its samples."));
            await loadVoices(true);
          } catch (err) {
            showError(error, err);
          }
        },
      }, "Delete voice"),
    ),
  );

  const samples = h("ol", { class: "samples", id: "sample-list", "aria-label": `Samples of ${voice.name}` },
    ...voice.samples.map((s, i) => sampleItem(voice, s, i, error)));
  box.replaceChildren(
    h("h3", { id: "voice-detail-title" }, voice.name),
    h("p", { class: "muted" }, `${voice.samples.length} sample${voice.samples.length === 1 ? "" : "s"}, ${seconds(voice.total_duration_s)} of speech in all · id ${voice.id}`),
    error,
    edit,
    h("h4", {}, "Samples"),
    voice.samples.length ? samples : h("p", { class: "hint" }, "No samples yet. A clear recording of 5 to 30 seconds gives the closest voice."),
    addSampleForm(voice, error),
  );
}

function reportLines(report) {
  const number = (v, unit, digits = 1) => (typeof v === "number" ? `${v.toFixed(digits)} ${unit}` : "–");
  return [
    ["Length", seconds(report.duration_s)],
    ["Speech", `${seconds(report.speech_s)} (${Math.round((report.speech_ratio || 0) * 100)} %)`],
    ["Loudness", number(report.loudness_lufs, "LUFS")],
    ["Peak", number(report.peak_dbfs, "dBFS")],
    ["Signal to noise", number(report.snr_db, "dB")],
    ["Clipped", `${((report.clipped_ratio || 0) * 100).toFixed(2)} %`],
  ];
}

function sampleItem(voice, sample, index, error) {
  const path = `/v1/voices/${encodeURIComponent(voice.id)}/samples/${encodeURIComponent(sample.id)}`;
  const report = sample.report || {};
  const warnings = report.warnings || [];
  const transcriptId = uid("transcript");
  const transcript = h("textarea", { id: transcriptId, rows: 2, class: "transcript" });
  transcript.value = sample.transcript;
  const save = h("button", {
    type: "button",
    class: "secondary small",
    onclick: async () => {
      showError(error, null);
      try {
        await busy(save, "Saving…", () => sendJSON("PATCH", path, { transcript: transcript.value }));
        toast("Transcript saved; the voice is being re-learned.");
        source.textContent = "written by you";
      } catch (err) {
        showError(error, err);
      }
    },
  }, "Save transcript");
  const source = h("small", { class: "hint" }, sample.transcript_source === "user" ? "written by you" : `heard by ${sample.transcript_source}`);
  return h(
    "li",
    { class: "sample", dataset: { sampleId: sample.id } },
    h("div", { class: "sample-head" },
      h("strong", {}, `Sample ${index + 1}`),
      h("span", { class: "muted" }, ` ${seconds(sample.duration_s)}`),
      warnings.length ? h("span", { class: "badge warn" }, `${warnings.length} warning${warnings.length > 1 ? "s" : ""}`) : h("span", { class: "badge ok" }, "good"),
    ),
    h("audio", { controls: true, preload: "none", src: apiUrl(`${path}/audio`), "aria-label": `Sample ${index + 1} of ${voice.name}` }),
    warnings.length ? h("ul", { class: "warnings" }, ...warnings.map((w) => h("li", {}, w))) : null,
    h("details", { class: "report" },
      h("summary", {}, "Quality report"),
      h("dl", {}, ...reportLines(report).flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
    ),
    h("div", { class: "field" }, h("label", { for: transcriptId }, "Transcript ", source), transcript),
    h("div", { class: "actions" },
      save,
      h("button", {
        type: "button",
        class: "danger small",
        onclick: async (event) => {
          if (!confirm(`Delete sample ${index + 1}?`)) return;
          try {
            await busy(event.currentTarget, "Deleting…", () => remove(path));
            await loadVoices(true);
            renderDetail(voice.id);
          } catch (err) {
            showError(error, err);
          }
        },
      }, "Delete sample"),
    ),
  );
}

function addSampleForm(voice, error) {
  const file = h("input", { id: "sample-file", name: "file", type: "file", accept: "audio/*,video/webm,video/mp4,.m4a,.aac,.flac,.ogg,.opus" });
  const transcript = h("textarea", { id: "sample-transcript", name: "transcript", rows: 2, placeholder: "Leave empty and Whisper writes it" });
  const status = h("p", { class: "hint", "aria-live": "polite" });
  const upload = async (blob, filename, button) => {
    showError(error, null);
    const data = new FormData();
    data.append("file", blob, filename);
    if (transcript.value.trim()) data.append("transcript", transcript.value.trim());
    const path = `/v1/voices/${encodeURIComponent(voice.id)}/samples`;
    try {
      const added = await busy(button, "Checking and transcribing…", () => postForm(path, data));
      toast(added.warnings.length ? `Sample added with ${added.warnings.length} warning(s).` : "Sample added.", added.warnings.length ? "warn" : "info");
      await loadVoices(true);
      await renderDetail(voice.id);
    } catch (err) {
      showError(error, err);
    }
  };

  const uploadButton = h("button", { type: "submit" }, "Upload sample");
  const form = h(
    "form",
    {
      class: "stack add-sample",
      id: "sample-add",
      onsubmit: (event) => {
        event.preventDefault();
        if (!file.files[0]) {
          showError(error, new Error("Choose an audio file, or record one."));
          file.focus();
          return;
        }
        upload(file.files[0], file.files[0].name, uploadButton);
      },
    },
    h("h4", {}, "Add a sample"),
    h("div", { class: "field" }, h("label", { for: "sample-file" }, "Recording ", h("small", { class: "hint" }, "(WAV, MP3, M4A, FLAC, OGG, WebM; 0.5–60 s)")), file),
    h("div", { class: "field" }, h("label", { for: "sample-transcript" }, "Transcript ", h("small", { class: "hint" }, "(optional)")), transcript),
    h("div", { class: "actions" }, uploadButton, recordControls(upload, status)),
    status,
  );
  return form;
}

// -- the microphone ---------------------------------------------------------------------------

function recordControls(upload, status) {
  const preview = h("audio", { controls: true, hidden: true, "aria-label": "Your recording" });
  const send = h("button", { type: "button", class: "secondary", hidden: true }, "Upload recording");
  const record = h("button", { type: "button", class: "secondary", "aria-pressed": "false" }, "Record from microphone");
  let blob = null;
  record.addEventListener("click", async () => {
    if (recorder) {
      stopRecording();
      return;
    }
    try {
      recorder = await startRecording((result) => {
        blob = result;
        record.textContent = "Record again";
        record.setAttribute("aria-pressed", "false");
        preview.src = URL.createObjectURL(blob);
        preview.hidden = false;
        send.hidden = false;
        status.textContent = `Recorded ${seconds(recorder?.elapsed ?? 0)}. Listen, then upload it.`;
        recorder = null;
      }, (elapsed) => (status.textContent = `Recording… ${seconds(elapsed)} (press Stop when done)`));
      record.textContent = "Stop recording";
      record.setAttribute("aria-pressed", "true");
    } catch (err) {
      status.textContent = `The microphone is not available: ${err.message}`;
    }
  });
  send.addEventListener("click", () => blob && upload(blob, `recording.${blob.type.includes("ogg") ? "ogg" : "webm"}`, send));
  return h("span", { class: "recorder" }, record, preview, send);
}

/** Start recording from the microphone; `done(blob)` is called when it stops. */
export async function startRecording(done, onTick = () => {}) {
  if (!navigator.mediaDevices || !window.MediaRecorder) throw new Error("this browser cannot record audio here (a secure origin is needed)");
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  const media = new MediaRecorder(stream);
  const parts = [];
  const started = performance.now();
  const handle = { media, stream, elapsed: 0 };
  const timer = setInterval(() => {
    handle.elapsed = (performance.now() - started) / 1000;
    onTick(handle.elapsed);
  }, 250);
  media.addEventListener("dataavailable", (event) => event.data.size && parts.push(event.data));
  media.addEventListener("stop", () => {
    clearInterval(timer);
    handle.elapsed = (performance.now() - started) / 1000;
    stream.getTracks().forEach((t) => t.stop());
    if (!handle.discard) done(new Blob(parts, { type: media.mimeType || "audio/webm" }));
  });
  media.start(250);
  return handle;
}

function stopRecording(discard = false) {
  if (!recorder) return;
  recorder.discard = discard;
  if (recorder.media.state !== "inactive") recorder.media.stop();
  if (discard) recorder = null;
}

