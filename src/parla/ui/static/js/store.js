// Data several views share (the voice list, the engines), loaded once and refreshed on demand.
// Views listen for "parla:voices" and "parla:models" events on window to refresh their pickers.

import { getJSON } from "./api.js";
import { fillSelect } from "./dom.js";

let voices = null;
let models = null;

export async function loadVoices(force = false) {
  if (!voices || force) {
    voices = (await getJSON("/v1/voices")).voices;
    window.dispatchEvent(new CustomEvent("parla:voices", { detail: voices }));
  }
  return voices;
}

export async function loadModels(force = false) {
  if (!models || force) {
    models = (await getJSON("/v1/models")).data;
    window.dispatchEvent(new CustomEvent("parla:models", { detail: models }));
  }
  return models;
}

/** The engines (not the OpenAI aliases) from /v1/models. */
export function engines(list = models || []) {
  return list.filter((m) => m.capabilities);
}

/** Options for a voice <select>: built-in voices, then library voices (those without samples
 * cannot speak yet and are disabled). */
export function voiceOptions(list = voices || []) {
  return list.map((v) => ({
    value: v.builtin ? v.name : v.id,
    label: v.builtin ? v.name : `${v.name} (${v.samples} sample${v.samples === 1 ? "" : "s"})`,
    group: v.builtin ? "Built-in" : "Library",
    disabled: !v.builtin && !v.samples,
    title: !v.builtin && !v.samples ? "Add a sample to this voice first (Voices view)" : v.description || "",
  }));
}

/** Keep a voice <select> filled with the current voices. */
export function bindVoiceSelect(select, { placeholder } = {}) {
  const fill = () => fillSelect(select, voiceOptions(), { placeholder });
  window.addEventListener("parla:voices", fill);
  if (voices) fill();
  return fill;
}

/** Keep an engine <select> filled: "Automatic" first, then the engines, unavailable ones disabled. */
export function bindEngineSelect(select, { filter = () => true, auto = "Automatic (tts-1)" } = {}) {
  const fill = () =>
    fillSelect(
      select,
      engines()
        .filter(filter)
        .map((m) => ({
          value: m.id,
          label: m.available ? m.id : `${m.id} (unavailable)`,
          disabled: !m.available,
          title: m.available ? m.description : m.reason || "not available here",
        })),
      { placeholder: auto },
    );
  window.addEventListener("parla:models", fill);
  if (models) fill();
  return fill;
}
