// Jobs: background generations (POST /v1/jobs), their live progress over WebSocket
// (/v1/jobs/{id}/ws; one socket per unfinished job, which unlike EventSource does not use up
// the browser's six connections per server), cancel, results, and the queue's statistics.

import { apiUrl, getJSON, remove, sendJSON, wsUrl } from "../api.js";
import { $, busy, h, showError, toast, when } from "../dom.js";
import { bindVoiceSelect, loadVoices } from "../store.js";

const TERMINAL = new Set(["completed", "failed", "cancelled"]);
let root;
const sockets = new Map(); // job id -> WebSocket
const jobs = new Map(); // job id -> the latest state
let poll = null;
let visible = false;

export function mount(section) {
  root = section;
  section.innerHTML = `
    <h2 id="h-jobs" tabindex="-1">Jobs</h2>
    <form class="card stack" id="job-form" novalidate>
      <h3>Queue a generation</h3>
      <div class="field"><label for="job-text">Text</label>
        <textarea id="job-text" rows="4" placeholder="A chapter, an article: it is spoken in the background, sentence by sentence."></textarea></div>
      <div class="grid">
        <div class="field"><label for="job-voice">Voice</label><select id="job-voice"></select></div>
        <div class="field"><label for="job-format">Format</label>
          <select id="job-format"><option>mp3</option><option>wav</option><option>flac</option><option>opus</option><option>aac</option></select></div>
      </div>
      <div class="actions"><button type="submit" id="job-submit">Queue job</button></div>
      <p class="error" role="alert" id="jobs-error" hidden></p>
    </form>
    <div class="card">
      <div class="row-between">
        <h3>Queue</h3>
        <span class="actions">
          <button type="button" class="secondary small" id="jobs-refresh">Refresh</button>
          <button type="button" class="secondary small" id="jobs-clear">Forget finished jobs</button>
        </span>
      </div>
      <p class="muted" id="queue-stats" aria-live="polite"></p>
      <ul class="list jobs" id="job-list" aria-label="Jobs, newest first"></ul>
      <p class="hint" id="jobs-empty" hidden>No jobs. Queue one above, or send one to POST /v1/jobs.</p>
    </div>
  `;
  bindVoiceSelect($("#job-voice", root), { placeholder: "Default voice" });
  $("#job-form", root).addEventListener("submit", submit);
  $("#jobs-refresh", root).addEventListener("click", refresh);
  $("#jobs-clear", root).addEventListener("click", async (event) => {
    try {
      const answer = await busy(event.currentTarget, "Forgetting…", () => sendJSON("DELETE", "/v1/jobs"));
      toast(`Forgot ${answer.deleted} finished job${answer.deleted === 1 ? "" : "s"}.`);
      refresh();
    } catch (err) {
      showError($("#jobs-error", root), err);
    }
  });
}

export function show() {
  visible = true;
  loadVoices().catch((err) => showError($("#jobs-error", root), err));
  refresh();
  // Jobs queued elsewhere (the API, another tab) show up within a few seconds.
  clearInterval(poll);
  poll = setInterval(refresh, 4000);
}

export function hide() {
  visible = false;
  clearInterval(poll);
  for (const socket of sockets.values()) socket.close();
  sockets.clear();
}

async function submit(event) {
  event.preventDefault();
  const error = $("#jobs-error", root);
  showError(error, null);
  const text = $("#job-text", root);
  if (!text.value.trim()) {
    showError(error, new Error("Type the text the job should speak."));
    text.focus();
    return;
  }
  try {
    const job = await busy($("#job-submit", root), "Queueing…", () =>
      sendJSON("POST", "/v1/jobs", {
        input: text.value,
        voice: $("#job-voice", root).value || undefined,
        response_format: $("#job-format", root).value,
      }),
    );
    toast("Job queued.");
    update(job);
    render();
  } catch (err) {
    showError(error, err);
  }
}

async function refresh() {
  try {
    const [list, stats] = await Promise.all([getJSON("/v1/jobs", { limit: 50 }), getJSON("/v1/queue/stats")]);
    const seen = new Set();
    for (const job of list.jobs) {
      seen.add(job.id);
      update(job);
    }
    for (const id of jobs.keys()) if (!seen.has(id)) jobs.delete(id);
    renderStats(stats);
    render();
    showError($("#jobs-error", root), null);
  } catch (err) {
    showError($("#jobs-error", root), err);
  }
}

function renderStats(stats) {
  const parts = Object.entries(stats)
    .filter(([, v]) => typeof v === "number" || typeof v === "string")
    .map(([k, v]) => `${k.replace(/_/g, " ")}: ${v}`);
  $("#queue-stats", root).textContent = parts.join(" · ");
}

let statsTimer = null;

async function refreshStats() {
  try {
    renderStats(await getJSON("/v1/queue/stats"));
  } catch {
    /* the next full refresh reports it */
  }
}

/** Take a job's new state and, while it is unfinished, follow it live. */
function update(job) {
  const before = jobs.get(job.id);
  jobs.set(job.id, job);
  if (!TERMINAL.has(job.status) && visible && !sockets.has(job.id)) follow(job.id);
  // Rows are replaced only when something shown changed (a result being played stays put).
  const shown = (j) => [j.status, j.progress, j.cancel_requested, j.error, j.attempts, j.worker].join("|");
  if (before && shown(before) === shown(job)) return;
  if (before && before.status !== job.status) {
    clearTimeout(statsTimer);
    statsTimer = setTimeout(refreshStats, 200); // the counts follow the change at once
  }
  const row = root.querySelector(`li[data-job-id="${CSS.escape(job.id)}"]`);
  if (row) row.replaceWith(jobItem(job));
}

function follow(id) {
  const socket = new WebSocket(wsUrl(`/v1/jobs/${encodeURIComponent(id)}/ws`));
  sockets.set(id, socket);
  socket.addEventListener("message", (event) => {
    const data = JSON.parse(event.data);
    if (data.id) update(data);
  });
  socket.addEventListener("close", () => {
    sockets.delete(id);
    const job = jobs.get(id);
    // Dropped before the end (server restart, network): pick it up again shortly.
    if (job && !TERMINAL.has(job.status) && visible) setTimeout(() => !sockets.has(id) && visible && follow(id), 2000);
  });
}

function render() {
  const list = $("#job-list", root);
  const ordered = [...jobs.values()].sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)));
  const ids = ordered.map((j) => j.id).join(",");
  const current = Array.from(list.children, (li) => li.dataset.jobId).join(",");
  if (ids !== current) list.replaceChildren(...ordered.map(jobItem)); // else update() patched the rows
  $("#jobs-empty", root).hidden = ordered.length > 0;
}

function jobItem(job) {
  const percent = Math.round(job.progress * 100);
  const label = `Job ${job.id.slice(0, 8)} (${job.kind})`;
  const result = apiUrl(`/v1/jobs/${encodeURIComponent(job.id)}/result`);
  return h(
    "li",
    { class: `job ${job.status}`, dataset: { jobId: job.id, status: job.status, progress: String(job.progress) } },
    h("div", { class: "row-between" },
      h("strong", {}, label),
      h("span", { class: `badge ${job.status}` }, job.status),
    ),
    h("div", { class: "progress-row" },
      h("progress", { max: 100, value: percent, "aria-label": `${label} progress` }),
      h("span", { class: "muted" }, `${percent} %`),
    ),
    h("p", { class: "muted meta" },
      `queued ${when(job.created_at)}`,
      job.finished_at ? ` · finished ${when(job.finished_at)}` : "",
      job.worker ? ` · worker ${job.worker}` : "",
      job.attempts > 1 ? ` · attempt ${job.attempts}` : ""),
    job.error ? h("p", { class: "error" }, job.error) : null,
    h("div", { class: "actions" },
      TERMINAL.has(job.status)
        ? null
        : h("button", {
            type: "button",
            class: "danger small",
            disabled: job.cancel_requested,
            "aria-label": `Cancel ${label}`,
            onclick: async (event) => {
              try {
                await busy(event.currentTarget, "Cancelling…", () => remove(`/v1/jobs/${encodeURIComponent(job.id)}`));
                toast("Cancel requested.");
                refresh();
              } catch (err) {
                showError($("#jobs-error", root), err);
              }
            },
          }, job.cancel_requested ? "Cancelling…" : "Cancel"),
      job.status === "completed" ? h("audio", { controls: true, preload: "none", src: result, "aria-label": `${label} result` }) : null,
      job.status === "completed" ? h("a", { class: "button secondary small", href: result, download: "" }, "Download") : null,
    ),
  );
}
