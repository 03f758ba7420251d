// Parla's public API, as the studio calls it: JSON in and out, errors as readable messages.
// The page lives at <server>/ui/, so the API root is one level up (this also works behind a
// reverse proxy that mounts Parla under a prefix).

export const ROOT = new URL("../", document.baseURI);

/** An absolute URL for an API path ("/v1/voices") with optional query parameters. */
export function apiUrl(path, params = {}) {
  const url = new URL(path.replace(/^\//, ""), ROOT);
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, String(value));
  }
  return url.toString();
}

/** The same for a WebSocket path. */
export function wsUrl(path) {
  const url = new URL(apiUrl(path));
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.toString();
}

// An API key, when the server asks for one (it does once an administrator has made keys): kept
// for this browser tab's session only, sent as a Bearer header on every call, and as a session
// cookie for what cannot carry a header (<audio src>, download links, WebSockets). The cookie is
// SameSite=Strict, so other sites' pages cannot make the browser send it.
const KEY_STORAGE = "parla.apiKey";
const KEY_COOKIE = "parla_api_key";

export function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

export function setApiKey(key) {
  const path = new URL(ROOT).pathname;
  if (key) {
    sessionStorage.setItem(KEY_STORAGE, key);
    document.cookie = `${KEY_COOKIE}=${encodeURIComponent(key)}; path=${path}; SameSite=Strict`;
  } else {
    sessionStorage.removeItem(KEY_STORAGE);
    document.cookie = `${KEY_COOKIE}=; path=${path}; SameSite=Strict; max-age=0`;
  }
}

let asking = null; // one question at a time, however many calls were refused together

/** Ask the person for a key (the server said 401); resolves to the key, or "" when they cancel. */
function askForKey(reason) {
  if (asking) return asking;
  asking = new Promise((resolve) => {
    const dialog = document.createElement("dialog");
    dialog.className = "key-dialog";
    dialog.innerHTML = `
      <form method="dialog">
        <h2>API key</h2>
        <p class="reason"></p>
        <label>Key <input name="key" type="password" autocomplete="off" required placeholder="parla_..."></label>
        <p class="hint">An administrator makes one with <code>parla keys create</code>. It is kept for this tab only.</p>
        <menu><button value="cancel" formnovalidate class="secondary">Cancel</button> <button value="ok">Use this key</button></menu>
      </form>`;
    dialog.querySelector(".reason").textContent = reason;
    document.body.append(dialog);
    dialog.addEventListener("close", () => {
      const key = dialog.returnValue === "ok" ? dialog.querySelector("input").value.trim() : "";
      dialog.remove();
      asking = null;
      if (key) setApiKey(key);
      resolve(key);
    });
    dialog.showModal();
  });
  return asking;
}

/** A failed call: `message` is what the server said (its JSON `detail`), prefixed by the status. */
export class ApiError extends Error {
  constructor(status, detail) {
    super(status ? `${detail} (HTTP ${status})` : detail);
    this.status = status;
    this.detail = detail;
  }
}

function describeDetail(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    // FastAPI's own validation list, should a route answer in that shape.
    return detail.map((e) => `${(e.loc || []).filter((p) => p !== "body").join(".") || "body"}: ${e.msg}`).join("; ");
  }
  return JSON.stringify(detail);
}

export async function errorOf(response) {
  let detail = response.statusText || "request failed";
  const text = await response.text().catch(() => "");
  try {
    const body = JSON.parse(text);
    if (body && body.detail !== undefined) detail = describeDetail(body.detail);
    else if (body && body.error && body.error.message) detail = body.error.message;
    else if (body && body.message) detail = body.message;
  } catch {
    if (text && text.length < 300) detail = text.trim();
  }
  if (response.status === 404 && detail === "Not Found") detail = `${new URL(response.url).pathname} is not on this server`;
  return new ApiError(response.status, detail);
}

/**
 * fetch() with Parla's conventions: `json` is sent as JSON, `form` (FormData) as multipart,
 * `params` become the query. Resolves to the Response when it is ok, throws ApiError otherwise.
 */
export async function call(method, path, { json, form, params, signal, headers = {} } = {}) {
  const init = { method, signal, headers: { Accept: "application/json", ...headers } };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  } else if (form !== undefined) {
    init.body = form;
  }
  for (;;) {
    if (apiKey()) init.headers.Authorization = `Bearer ${apiKey()}`;
    let response;
    try {
      response = await fetch(apiUrl(path, params), init);
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new ApiError(0, "cannot reach the Parla server: is it running?");
    }
    if (response.ok) return response;
    const error = await errorOf(response);
    // 401: no key or a wrong one; ask, then send the same request again (its body is a string or
    // FormData, both can be sent twice). Cancelling gives the caller the 401.
    if (response.status !== 401 || !(await askForKey(error.detail))) throw error;
  }
}

export async function getJSON(path, params) {
  return (await call("GET", path, { params })).json();
}

export async function sendJSON(method, path, json, params) {
  const response = await call(method, path, { json, params });
  return response.status === 204 ? null : response.json();
}

export async function postForm(path, form, method = "POST") {
  return (await call(method, path, { form })).json();
}

export async function remove(path) {
  await call("DELETE", path);
}

/** The bytes of a streamed response body, chunk by chunk, as they arrive. */
export async function* chunks(response) {
  const reader = response.body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      if (value && value.length) yield value;
    }
  } finally {
    reader.releaseLock();
  }
}

/** Server-sent events from a streamed response (works for POST, unlike EventSource):
 * yields {event, data} with `data` parsed as JSON when it is JSON. An event's type is its
 * `event:` line, or else the `type` field of its JSON data. */
export async function* events(response) {
  const decoder = new TextDecoder();
  let buffer = "";
  const parse = (block) => {
    let event = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") event = value;
      else if (field === "data") data.push(value);
    }
    if (!data.length) return null;
    let parsed = data.join("\n");
    try {
      parsed = JSON.parse(parsed);
    } catch {
      /* plain text data */
    }
    if (event === "message" && parsed && typeof parsed === "object" && parsed.type) event = parsed.type;
    return { event, data: parsed };
  };
  for await (const chunk of chunks(response)) {
    buffer += decoder.decode(chunk, { stream: true }).replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const message = parse(buffer.slice(0, end));
      buffer = buffer.slice(end + 2);
      if (message) yield message;
    }
  }
  const last = parse(buffer.trim());
  if (last) yield last;
}
