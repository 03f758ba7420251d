// Small DOM helpers shared by the views. User data only ever goes in through textContent and
// attributes (never innerHTML), so names and transcripts cannot inject markup.

/** h("button", {class: "x", onclick: fn}, "Label", child...) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "text") el.textContent = value;
    else if (key in el && typeof value !== "string") el[key] = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export const $ = (selector, root = document) => root.querySelector(selector);
export const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

let counter = 0;
/** A unique id for label/aria wiring. */
export const uid = (prefix = "id") => `${prefix}-${++counter}`;

/** A short message in the polite live region, gone after a while. */
export function toast(message, kind = "info") {
  const box = document.getElementById("toasts");
  const item = h("div", { class: `toast ${kind}`, text: message });
  box.append(item);
  setTimeout(() => item.remove(), kind === "error" ? 8000 : 4000);
}

/** Show an error (an ApiError's message is the server's `detail`) in an element with role=alert. */
export function showError(target, err) {
  if (!target) return;
  if (!err) {
    target.textContent = "";
    target.hidden = true;
    return;
  }
  console.warn(err);
  target.textContent = err.message || String(err);
  target.hidden = false;
}

/** Disable a button while `work` runs, with a busy label, then restore it. */
export async function busy(button, label, work) {
  const old = button.textContent;
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  if (label) button.textContent = label;
  try {
    return await work();
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
    button.textContent = old;
  }
}

export function seconds(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  if (value < 60) return `${value.toFixed(1)} s`;
  const m = Math.floor(value / 60);
  return `${m} min ${Math.round(value - m * 60)} s`;
}

export function when(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
}

export function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

/** Fill a <select> with options [{value, label, disabled, group}] keeping the current choice. */
export function fillSelect(select, options, { keep = true, placeholder } = {}) {
  const current = select.value;
  select.replaceChildren();
  if (placeholder !== undefined) select.append(h("option", { value: "" }, placeholder));
  const groups = new Map();
  for (const option of options) {
    const el = h("option", { value: option.value, disabled: option.disabled, title: option.title }, option.label ?? option.value);
    if (option.group) {
      if (!groups.has(option.group)) {
        const group = h("optgroup", { label: option.group });
        groups.set(option.group, group);
        select.append(group);
      }
      groups.get(option.group).append(el);
    } else {
      select.append(el);
    }
  }
  if (keep && current && options.some((o) => o.value === current)) select.value = current;
}

/** Trigger a download of a Blob with a file name. */
export function saveBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  const a = h("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}
