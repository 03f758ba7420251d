// The studio's audio player: plays speech while it is still arriving, draws its waveform, and
// offers the finished file for replay and download.
//
// How it streams, by format (all checked in Chromium):
//   pcm, wav  WebAudio: each chunk of 16-bit samples is scheduled right after the previous one.
//   mp3       MediaSource feeding the <audio> element.
//   others    buffered whole, then played by the <audio> element (opus/aac/flac cannot be fed
//             to MediaSource as raw streams).
// When a WebAudio stream ends the complete file is put in the <audio> element, so replay and
// seeking work the same for every format.
//
// The root element's data attributes tell tests (and curious people) what happened:
// data-state idle|loading|streaming|done|stopped|error, data-bytes (received), data-duration
// (seconds of audio decoded), data-first-audio-ms (request to first bytes).

import { chunks } from "./api.js";
import { bytes as formatBytes, h, seconds, uid } from "./dom.js";

let context = null;

/** The page's one AudioContext (created on first use, which follows a click). */
export function audioContext() {
  if (!context) context = new AudioContext();
  if (context.state === "suspended") context.resume().catch(() => {});
  return context;
}

/** A WAV file (16-bit mono) from Int16Array parts. */
export function wavBlob(parts, rate) {
  const length = parts.reduce((n, p) => n + p.length, 0);
  const header = new DataView(new ArrayBuffer(44));
  const text = (offset, s) => [...s].forEach((c, i) => header.setUint8(offset + i, c.charCodeAt(0)));
  text(0, "RIFF");
  header.setUint32(4, 36 + length * 2, true);
  text(8, "WAVEfmt ");
  header.setUint32(16, 16, true);
  header.setUint16(20, 1, true);
  header.setUint16(22, 1, true);
  header.setUint32(24, rate, true);
  header.setUint32(28, rate * 2, true);
  header.setUint16(32, 2, true);
  header.setUint16(34, 16, true);
  text(36, "data");
  header.setUint32(40, length * 2, true);
  return new Blob([header, ...parts], { type: "audio/wav" });
}

/** An async iterable that someone else pushes into (e.g. audio arriving in SSE events). */
export class Feed {
  constructor() {
    this.items = [];
    this.waiting = null;
    this.ended = false;
  }
  push(item) {
    this.items.push(item);
    this.wake();
  }
  end() {
    this.ended = true;
    this.wake();
  }
  wake() {
    if (this.waiting) {
      this.waiting();
      this.waiting = null;
    }
  }
  async *[Symbol.asyncIterator]() {
    for (;;) {
      if (this.items.length) yield this.items.shift();
      else if (this.ended) return;
      else await new Promise((resolve) => (this.waiting = resolve));
    }
  }
}

export function base64Bytes(b64) {
  const raw = atob(b64);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

/** 16-bit little-endian samples from a stream of byte chunks of any length. */
async function* int16From(source, onBytes) {
  let carry = null;
  for await (const chunk of source) {
    onBytes(chunk.length);
    let data = chunk;
    if (carry) {
      data = new Uint8Array(carry.length + chunk.length);
      data.set(carry);
      data.set(chunk, carry.length);
      carry = null;
    }
    const even = data.length - (data.length % 2);
    if (even < data.length) carry = data.slice(even);
    if (even) yield new Int16Array(data.slice(0, even).buffer);
  }
}

/** A streamed WAV: reads the header for the rate, then hands on the sample bytes. */
async function wavStream(source) {
  const iterator = source[Symbol.asyncIterator]();
  let head = new Uint8Array(0);
  for (;;) {
    const { done, value } = await iterator.next();
    if (done) throw new Error("the WAV stream ended before its header");
    const joined = new Uint8Array(head.length + value.length);
    joined.set(head);
    joined.set(value, head.length);
    head = joined;
    // Find the "data" chunk (Parla's header is 44 bytes; others may carry extra chunks).
    const view = new DataView(head.buffer);
    let offset = 12;
    while (offset + 8 <= head.length) {
      const id = String.fromCharCode(...head.slice(offset, offset + 4));
      const size = view.getUint32(offset + 4, true);
      if (id === "data") {
        const rate = view.getUint32(24, true);
        const rest = head.slice(offset + 8);
        async function* body() {
          if (rest.length) yield rest;
          for (;;) {
            const next = await iterator.next();
            if (next.done) return;
            yield next.value;
          }
        }
        return { rate, body: body() };
      }
      offset += 8 + size + (size % 2);
    }
  }
}

const MIME = { mp3: "audio/mpeg", opus: "audio/ogg", aac: "audio/aac", flac: "audio/flac", wav: "audio/wav", pcm: "audio/wav" };

export class Player {
  /** `label` names the audio for screen readers. */
  constructor({ label = "Generated speech" } = {}) {
    this.label = label;
    const statusId = uid("player-status");
    this.canvas = h("canvas", { class: "wave", role: "img", "aria-label": `${label}: waveform`, height: 96 });
    this.audio = h("audio", { controls: true, preload: "auto", "aria-label": label, "aria-describedby": statusId });
    this.status = h("span", { class: "player-status", id: statusId, "aria-live": "polite" }, "Nothing played yet.");
    this.stopButton = h("button", { type: "button", class: "secondary", hidden: true, onclick: () => this.stop() }, "Stop");
    this.download = h("a", { class: "button secondary", hidden: true, download: "speech.wav" }, "Download");
    this.el = h(
      "div",
      { class: "player", dataset: { state: "idle", bytes: "0", duration: "0" } },
      this.canvas,
      h("div", { class: "player-row" }, this.audio, this.stopButton, this.download),
      this.status,
    );
    this.peaks = []; // [min, max] per 10 ms
    this.duration = 0;
    this.regions = [];
    this.activeRegion = -1;
    this.listeners = [];
    this.sources = [];
    this.canvas.addEventListener("click", (event) => this.seekTo(event));
    this.audio.addEventListener("play", () => {
      this.stopLive();
      this.loop();
    });
    this.audio.addEventListener("timeupdate", () => this.tick());
    this.audio.addEventListener("seeked", () => this.tick());
    new ResizeObserver(() => this.draw()).observe(this.canvas);
  }

  // -- lifecycle ----------------------------------------------------------------------------

  /** Start a new playback; returns the AbortController that Stop uses (pass its signal to fetch). */
  begin() {
    this.stop(true);
    this.controller = new AbortController();
    this.peaks = [];
    this.duration = 0;
    this.received = 0;
    this.started = performance.now();
    this.firstAt = null;
    Object.assign(this.el.dataset, { bytes: "0", duration: "0" });
    delete this.el.dataset.firstAudioMs;
    this.setRegions([]);
    this.audio.pause();
    this.audio.removeAttribute("src");
    this.audio.load();
    for (const url of [this.objectUrl, this.mediaUrl]) if (url) URL.revokeObjectURL(url);
    this.objectUrl = this.mediaUrl = null;
    this.download.hidden = true;
    this.stopButton.hidden = false;
    this.set("loading", "Waiting for the first audio…");
    this.draw();
    audioContext(); // created now, while the click that started this still counts as a gesture
    return this.controller;
  }

  stop(silent = false) {
    if (this.controller) this.controller.abort();
    this.stopLive();
    this.audio.pause();
    this.stopButton.hidden = true;
    if (!silent && this.el.dataset.state !== "done") this.set("stopped", "Stopped.");
  }

  stopLive() {
    for (const source of this.sources) {
      try {
        source.stop();
      } catch {
        /* already stopped */
      }
    }
    this.sources = [];
    this.live = null;
  }

  set(state, message) {
    this.el.dataset.state = state;
    if (message !== undefined) this.status.textContent = message;
  }

  fail(err) {
    this.stopButton.hidden = true;
    if (err && err.name === "AbortError") {
      if (this.el.dataset.state !== "stopped") this.set("stopped", `Stopped after ${formatBytes(this.received || 0)}.`);
      return;
    }
    // A refused request (an ApiError, with its status) is explained where the request was made.
    this.set("error", err && err.status !== undefined ? "No audio: the request failed (see the message)." : `Could not play: ${err.message || err}`);
  }

  countBytes(n) {
    if (this.firstAt === null) {
      this.firstAt = performance.now() - this.started;
      this.el.dataset.firstAudioMs = String(Math.round(this.firstAt));
    }
    this.received += n;
    this.el.dataset.bytes = String(this.received);
  }

  finish(blob, filename, duration) {
    this.duration = duration;
    this.el.dataset.duration = duration.toFixed(3);
    this.objectUrl = this.objectUrl || URL.createObjectURL(blob);
    if (!this.audio.src) this.audio.src = this.objectUrl;
    this.download.href = this.objectUrl;
    this.download.download = filename;
    this.download.textContent = `Download ${filename.split(".").pop().toUpperCase()}`;
    this.download.hidden = false;
    this.stopButton.hidden = true;
    this.canvas.setAttribute("aria-label", `${this.label}: waveform, ${seconds(duration)}`);
    const first = this.firstAt === null ? "" : `, first audio after ${(this.firstAt / 1000).toFixed(2)} s`;
    this.set("done", `${seconds(duration)} of audio, ${formatBytes(this.received)}${first}.`);
    this.draw();
  }

  // -- sources ------------------------------------------------------------------------------

  /** Play a fetch Response carrying audio in `format` as it arrives. */
  async playResponse(response, format, filename = `speech.${format === "pcm" ? "wav" : format}`) {
    try {
      if (format === "pcm") return await this.playPcm(chunks(response), 24000, filename);
      if (format === "wav") {
        const { rate, body } = await wavStream(chunks(response));
        return await this.playPcm(body, rate, filename);
      }
      if (format === "mp3" && window.MediaSource && MediaSource.isTypeSupported("audio/mpeg")) {
        return await this.playMediaSource(response, "audio/mpeg", filename);
      }
      const parts = [];
      for await (const chunk of chunks(response)) {
        this.countBytes(chunk.length);
        parts.push(chunk);
        this.set("streaming", `Receiving… ${formatBytes(this.received)}`);
      }
      return await this.playBlob(new Blob(parts, { type: MIME[format] || "application/octet-stream" }), filename);
    } catch (err) {
      this.fail(err);
      throw err;
    }
  }

  /** Play 16-bit mono PCM at `rate` from an async iterable of byte chunks, as it comes. */
  async playPcm(source, rate, filename = "speech.wav") {
    const ctx = audioContext();
    const parts = [];
    let total = 0;
    let next = 0;
    const live = { rate, marks: [] };
    this.live = live;
    this.duration = 0;
    try {
      for await (const samples of int16From(source, (n) => this.countBytes(n))) {
        if (this.controller && this.controller.signal.aborted) throw new DOMException("stopped", "AbortError");
        parts.push(samples);
        const floats = new Float32Array(samples.length);
        for (let i = 0; i < samples.length; i++) floats[i] = samples[i] / 32768;
        this.addPeaks(floats, rate);
        if (this.live === live) {
          const buffer = ctx.createBuffer(1, floats.length, rate);
          buffer.copyToChannel(floats, 0);
          const node = ctx.createBufferSource();
          node.buffer = buffer;
          node.connect(ctx.destination);
          next = Math.max(next, ctx.currentTime + 0.06); // a gap here means the network fell behind
          node.start(next);
          live.marks.push([next, total / rate]);
          node.onended = () => {
            this.sources = this.sources.filter((s) => s !== node);
            if (!this.sources.length && this.live === live && live.complete) this.live = null;
          };
          this.sources.push(node);
          next += buffer.duration;
          if (live.marks.length === 1) this.loop();
        }
        total += samples.length;
        this.duration = total / rate;
        this.set("streaming", `Playing as it arrives… ${seconds(this.duration)} received`);
        this.draw();
      }
    } catch (err) {
      if (err.name !== "AbortError") this.stopLive();
      else if (total) this.finishPcm(parts, rate, total, filename, "stopped");
      throw err;
    }
    live.complete = true;
    if (!this.sources.length && this.live === live) this.live = null;
    this.finishPcm(parts, rate, total, filename);
  }

  finishPcm(parts, rate, total, filename, state) {
    this.finish(wavBlob(parts, rate), filename.replace(/\.pcm$/, ".wav"), total / rate);
    if (state) this.set(state, `Stopped: ${seconds(total / rate)} kept.`);
  }

  async playMediaSource(response, mime, filename) {
    const source = new MediaSource();
    this.mediaUrl = URL.createObjectURL(source);
    this.audio.src = this.mediaUrl;
    await new Promise((resolve) => source.addEventListener("sourceopen", resolve, { once: true }));
    const buffer = source.addSourceBuffer(mime);
    const append = (data) =>
      new Promise((resolve, reject) => {
        buffer.addEventListener("updateend", resolve, { once: true });
        buffer.addEventListener("error", () => reject(new Error("the browser could not decode the audio")), { once: true });
        buffer.appendBuffer(data);
      });
    const parts = [];
    let playing = false;
    for await (const chunk of chunks(response)) {
      this.countBytes(chunk.length);
      parts.push(chunk);
      await append(chunk);
      if (!playing && buffer.buffered.length) {
        playing = true;
        this.audio.play().catch(() => this.set("streaming", "Press play to listen."));
      }
      this.set("streaming", `Playing as it arrives… ${formatBytes(this.received)}`);
    }
    if (source.readyState === "open") source.endOfStream();
    const blob = new Blob(parts, { type: mime });
    const decoded = await this.decode(blob);
    // The MediaSource stays the player's source (it is still playing); the download is a file.
    this.finish(blob, filename, decoded ? decoded.duration : this.audio.duration || 0);
  }

  /** Play a complete file (a Blob); `regions` mark spans (dialogue turns) on the waveform. */
  async playBlob(blob, filename, { autoplay = true, regions = [] } = {}) {
    if (!this.received) this.countBytes(blob.size);
    this.objectUrl = URL.createObjectURL(blob);
    this.audio.src = this.objectUrl;
    const decoded = await this.decode(blob);
    this.setRegions(regions);
    this.finish(blob, filename, decoded ? decoded.duration : 0);
    if (autoplay) await this.audio.play().catch(() => {});
  }

  async decode(blob) {
    try {
      const buffer = await audioContext().decodeAudioData(await blob.arrayBuffer());
      this.peaks = [];
      this.addPeaks(buffer.getChannelData(0), buffer.sampleRate);
      return buffer;
    } catch {
      return null; // the <audio> element may still play what WebAudio cannot decode
    }
  }

  // -- position, regions, drawing -----------------------------------------------------------

  /** The position in seconds of whatever is playing now. */
  position() {
    if (this.live && this.live.marks.length) {
      const now = context.currentTime;
      let at = 0;
      for (const [when, offset] of this.live.marks) {
        if (when > now) break;
        at = offset + (now - when);
      }
      return Math.min(at, this.duration);
    }
    return this.audio.currentTime || 0;
  }

  playing() {
    return Boolean(this.live) || !this.audio.paused;
  }

  /** Call `fn(seconds)` as playback moves. */
  onTime(fn) {
    this.listeners.push(fn);
  }

  setRegions(regions) {
    this.regions = regions;
    this.activeRegion = -1;
    this.draw();
  }

  tick() {
    const at = this.position();
    this.activeRegion = this.regions.findIndex((r) => at >= r.start && at < r.end);
    for (const fn of this.listeners) fn(at);
    this.draw();
  }

  loop() {
    if (this.looping) return;
    this.looping = true;
    const frame = () => {
      this.tick();
      if (this.playing()) requestAnimationFrame(frame);
      else this.looping = false;
    };
    requestAnimationFrame(frame);
  }

  seekTo(event) {
    if (!this.duration || this.el.dataset.state !== "done") return;
    const rect = this.canvas.getBoundingClientRect();
    this.seek(((event.clientX - rect.left) / rect.width) * this.duration);
  }

  seek(time) {
    this.stopLive();
    this.audio.currentTime = Math.max(0, time);
    this.tick();
  }

  addPeaks(floats, rate) {
    const step = Math.max(1, Math.round(rate / 100));
    for (let i = 0; i < floats.length; i += step) {
      let lo = 0;
      let hi = 0;
      const end = Math.min(floats.length, i + step);
      for (let j = i; j < end; j++) {
        const v = floats[j];
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
      this.peaks.push([lo, hi]);
    }
  }

  draw() {
    const canvas = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(canvas.clientWidth * ratio));
    const height = Math.max(1, Math.round(canvas.clientHeight * ratio));
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    }
    const g = canvas.getContext("2d");
    const style = getComputedStyle(canvas);
    const color = (name, fallback) => style.getPropertyValue(name).trim() || fallback;
    g.clearRect(0, 0, width, height);
    const total = Math.max(this.peaks.length / 100, this.duration, 0.001);
    this.regions.forEach((region, i) => {
      g.fillStyle = i === this.activeRegion ? color("--wave-active", "#fde68a") : i % 2 ? color("--wave-band", "#eef") : "transparent";
      g.fillRect((region.start / total) * width, 0, ((region.end - region.start) / total) * width, height);
    });
    const mid = height / 2;
    g.fillStyle = color("--border", "#ccc");
    g.fillRect(0, mid, width, Math.max(1, ratio));
    const n = this.peaks.length;
    if (!n) return;
    const played = this.playing() || this.audio.currentTime > 0 ? (this.position() / total) * width : -1;
    const perPixel = n / ((n / 100 / total) * width);
    const columns = Math.min(width, Math.ceil(n / perPixel));
    for (let x = 0; x < columns; x++) {
      const from = Math.floor(x * perPixel);
      const to = Math.max(from + 1, Math.floor((x + 1) * perPixel));
      let lo = 0;
      let hi = 0;
      for (let i = from; i < to && i < n; i++) {
        if (this.peaks[i][0] < lo) lo = this.peaks[i][0];
        if (this.peaks[i][1] > hi) hi = this.peaks[i][1];
      }
      g.fillStyle = x <= played ? color("--wave-played", "#1e40af") : color("--wave", "#60a5fa");
      g.fillRect(x, mid - hi * mid, 1, Math.max(1, (hi - lo) * mid));
    }
    if (played >= 0) {
      g.fillStyle = color("--text", "#000");
      g.fillRect(Math.min(played, width - 1), 0, Math.max(1, ratio), height);
    }
  }
}
