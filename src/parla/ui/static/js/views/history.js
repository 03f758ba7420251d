// History: every generation (GET /v1/history with search and filters, /v1/history/stats),
// played, downloaded or deleted one by one.

import { apiUrl, getJSON, remove } from "../api.js";
import { $, busy, h, seconds, showError, toast, when } from "../dom.js";

const PAGE = 20;
let root;
let offset = 0;
let timer = null;

export function mount(section) {
  root = section;
  section.innerHTML = `
    <h2 id="h-history" tabindex="-1">History</h2>
    <div class="card" id="history-stats" aria-live="polite"><p class="hint">Loading statistics…</p></div>
    <form class="card grid" id="history-filters" role="search" aria-label="Filter the history">
      <div class="field wide"><label for="history-search">Search the text</label>
        <input id="history-search" name="search" type="search" placeholder="words the generation spoke"></div>
      <div class="field"><label for="history-voice">Voice</label><select id="history-voice" name="voice"><option value="">Any voice</option></select></div>
      <div class="field"><label for="history-engine">Engine</label><select id="history-engine" name="engine"><option value="">Any engine</option></select></div>
      <div class="field"><label for="history-source">Source</label>
        <select id="history-source" name="source">
          <option value="">Any source</option><option>openai</option><option>job</option><option>generate</option>
          <option>voicebox</option><option>xtts</option><option>standard</option><option>cli</option>
        </select></div>
      <div class="field"><label for="history-after">From</label><input id="history-after" name="created_after" type="datetime-local"></div>
      <div class="field"><label for="history-before">Until</label><input id="history-before" name="created_before" type="datetime-local"></div>
      <div class="actions"><button type="reset" class="secondary">Clear filters</button></div>
    </form>
    <p class="error" role="alert" id="history-error" hidden></p>
    <div class="card">
      <div class="player-row sticky">
        <audio id="history-audio" controls preload="none" aria-label="The generation being played"></audio>
        <span class="muted" id="history-now" aria-live="polite">Choose Play on a generation.</span>
      </div>
      <p class="muted" id="history-count" aria-live="polite"></p>
      <ul class="list history" id="history-list" aria-label="Generations, newest first"></ul>
      <div class="actions pager">
        <button type="button" class="secondary" id="history-prev">Newer</button>
        <button type="button" class="secondary" id="history-next">Older</button>
      </div>
    </div>
  `;
  const form = $("#history-filters", root);
  form.addEventListener("submit", (e) => e.preventDefault());
  form.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      offset = 0;
      refresh();
    }, 300);
  });
  form.addEventListener("reset", () =>
    setTimeout(() => {
      offset = 0;
      refresh();
    }),
  );
  $("#history-prev", root).addEventListener("click", () => {
    offset = Math.max(0, offset - PAGE);
    refresh();
  });
  $("#history-next", root).addEventListener("click", () => {
    offset += PAGE;
    refresh();
  });
}

export function show() {
  refresh();
}

function filters() {
  const form = $("#history-filters", root);
  const params = {};
  for (const name of ["search", "voice", "engine", "source"]) params[name] = form.elements[name].value.trim();
  for (const name of ["created_after", "created_before"]) {
    const value = form.elements[name].value;
    if (value) params[name] = new Date(value).toISOString(); // the browser's local time, sent as UTC
  }
  return params;
}

async function refresh() {
  const error = $("#history-error", root);
  const params = filters();
  try {
    const [page, stats] = await Promise.all([
      getJSON("/v1/history", { ...params, limit: PAGE, offset }),
      getJSON("/v1/history/stats", params),
    ]);
    showError(error, null);
    renderStats(stats);
    renderPage(page);
  } catch (err) {
    showError(error, err);
  }
}

function renderStats(stats) {
  const top = (counts) =>
    Object.entries(counts)
      .sort((a, b) => b[1] - a[1])
      .slice(0, 6)
      .map(([k, v]) => `${k} ${v}`)
      .join(", ") || "–";
  const rtf = stats.mean_real_time_factor;
  $("#history-stats", root).replaceChildren(
    h("h3", {}, "Statistics"),
    h("dl", { class: "stats" },
      h("div", {}, h("dt", {}, "Generations"), h("dd", { id: "history-total" }, String(stats.total_generations))),
      h("div", {}, h("dt", {}, "Audio made"), h("dd", {}, seconds(stats.total_duration_seconds))),
      h("div", {}, h("dt", {}, "Compute time"), h("dd", {}, seconds(stats.total_elapsed_seconds))),
      h("div", {}, h("dt", {}, "Real-time factor"), h("dd", { title: "seconds of compute per second of audio; below 1 is faster than real time" }, rtf ? rtf.toFixed(3) : "–")),
      h("div", { class: "wide" }, h("dt", {}, "By voice"), h("dd", {}, top(stats.generations_by_voice))),
      h("div", { class: "wide" }, h("dt", {}, "By engine"), h("dd", {}, top(stats.generations_by_engine))),
    ),
  );
  // The filter menus offer what the (unfiltered) history holds; keep the current choice.
  for (const [id, counts] of [["#history-voice", stats.generations_by_voice], ["#history-engine", stats.generations_by_engine]]) {
    const select = $(id, root);
    const have = new Set(Array.from(select.options).map((o) => o.value));
    for (const key of Object.keys(counts)) if (!have.has(key)) select.append(h("option", { value: key }, key));
  }
}

function renderPage(page) {
  const list = $("#history-list", root);
  const end = Math.min(page.total, page.offset + page.items.length);
  $("#history-count", root).textContent = page.total
    ? `${page.offset + 1}–${end} of ${page.total} generation${page.total === 1 ? "" : "s"}`
    : "No generations match.";
  $("#history-prev", root).disabled = page.offset === 0;
  $("#history-next", root).disabled = end >= page.total;
  list.replaceChildren(...page.items.map(item));
}

/** What hearing a long text's pieces found, with the pieces still wrong, when they were checked. */
function checksLine(checks) {
  if (!checks) return null;
  if (!checks.checked) return h("p", { class: "muted meta" }, `Not checked: ${checks.unchecked || "nothing to hear"}`);
  const flagged = (checks.details || []).filter((d) => d.flagged);
  const summary = `Heard: ${checks.checked} of ${checks.pieces} pieces, ${checks.retried} spoken again, `
    + `${checks.flagged} still wrong · WER mean ${checks.mean_wer.toFixed(2)}, largest ${checks.max_wer.toFixed(2)}`;
  return h("p", { class: flagged.length ? "meta warn checks" : "muted meta checks" },
    summary,
    ...flagged.map((d) => h("span", { class: "flagged", title: `heard: ${d.heard}` }, ` · piece ${d.piece + 1}: “${d.text}”`)),
  );
}

function item(gen) {
  const audioUrl = apiUrl(`/v1/history/${encodeURIComponent(gen.id)}/audio`);
  const short = gen.text.length > 160 ? `${gen.text.slice(0, 160)}…` : gen.text;
  return h(
    "li",
    { class: "generation", dataset: { generationId: gen.id } },
    h("p", { class: "text", title: gen.text }, short),
    h("p", { class: "muted meta" },
      `${when(gen.created_at)} · ${gen.voice} · ${gen.engine} · ${gen.source} · ${gen.format} · ${seconds(gen.duration_s)} · RTF ${gen.real_time_factor.toFixed(2)}`),
    checksLine(gen.checks),
    h("div", { class: "actions" },
      h("button", {
        type: "button",
        class: "secondary small",
        disabled: !gen.has_audio,
        "aria-label": `Play: ${short.slice(0, 60)}`,
        onclick: () => {
          const audio = $("#history-audio", root);
          audio.src = audioUrl;
          audio.play().catch(() => {});
          $("#history-now", root).textContent = `Playing: ${short.slice(0, 80)}`;
        },
      }, "Play"),
      gen.has_audio
        ? h("a", { class: "button secondary small", href: audioUrl, download: `${gen.id}.${gen.format}` }, "Download")
        : h("span", { class: "muted" }, "audio not kept"),
      gen.has_timestamps
        ? h("a", {
            class: "button secondary small",
            href: apiUrl(`/v1/history/${encodeURIComponent(gen.id)}/captions`, { format: "srt" }),
            download: `${gen.id}.srt`,
          }, "Captions")
        : null,
      h("button", {
        type: "button",
        class: "danger small",
        "aria-label": `Delete: ${short.slice(0, 60)}`,
        onclick: async (event) => {
          if (!confirm("Delete this generation and its audio?")) return;
          try {
            await busy(event.currentTarget, "Deleting…", () => remove(`/v1/history/${encodeURIComponent(gen.id)}`));
            toast("Generation deleted.");
            refresh();
          } catch (err) {
            showError($("#history-error", root), err);
          }
        },
      }, "Delete"),
    ),
  );
}
