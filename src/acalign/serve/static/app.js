// acalign serve: the page's behaviour. Plain JavaScript, no build step, no outside resources.
"use strict";

const COLORS = ["#2f6fdf", "#e8590c", "#9c36b5", "#0c8599", "#c2255c", "#5c940d", "#e67700", "#495057"];
const TRUTH_COLOR = "#2e9e4f";
const LAYOUT = { left: 150, right: 12, top: 8, spec: 170, row: 74, curve: 50, lane: 8, axis: 26 };

const state = {
  config: null,
  source: null,      // {kind: "clip", id, name} or {kind: "upload", file, url}
  result: null,      // the last /api/ground response
  hitboxes: [],      // clickable segments on the plot: {x0, x1, y0, y1, onset, offset}
  stopAt: null,      // pause playback here (segment play)
  specImage: null,
};

const $ = (id) => document.getElementById(id);

// ------------------------------------------------------------------ small helpers

function showMessage(text) {
  const box = $("message");
  box.textContent = text;
  box.hidden = !text;
}

function setBusy(busy) {
  $("busy").hidden = !busy;
  $("ground-button").disabled = busy;
}

function fmt(seconds) {
  return Number(seconds).toFixed(2);
}

function errorText(body, status) {
  // FastAPI sends {"detail": "..."} or, for validation errors, {"detail": [{msg, loc}, ...]}.
  if (body && typeof body.detail === "string") return body.detail;
  if (body && Array.isArray(body.detail)) {
    return body.detail.map((d) => `${(d.loc || []).slice(-1)[0] || "input"}: ${d.msg}`).join("; ");
  }
  return `the server answered HTTP ${status}`;
}

async function api(url, options = {}) {
  let response;
  try {
    response = await fetch(url, options);
  } catch (err) {
    throw new Error(`could not reach the server (${err.message})`);
  }
  let body = null;
  try {
    body = await response.json();
  } catch (err) {
    body = null;
  }
  if (!response.ok) throw new Error(errorText(body, response.status));
  return body;
}

function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const child of children) node.append(child);
  return node;
}

// ------------------------------------------------------------------ clips and sources

async function loadConfig() {
  state.config = await api("/api/config");
  const c = state.config;
  $("model-info").textContent =
    `model ${c.model} · ${c.n_clips} clip(s)` + (c.has_index ? " · index loaded" : " · no index") +
    ` · uploads up to ${c.max_upload_mb} MB`;
  $("search-panel").hidden = !c.has_index;
  if (c.threshold !== null && c.threshold !== undefined) $("threshold").placeholder = fmt(c.threshold);
}

async function loadClips() {
  const q = encodeURIComponent($("clip-filter").value);
  const data = await api(`/api/clips?q=${q}&limit=300`);
  const list = $("clip-list");
  list.replaceChildren();
  for (const clip of data.clips) {
    const item = el("li", { title: clip.name }, [el("span", { className: "name", textContent: clip.name })]);
    item.dataset.id = clip.id;
    if (clip.n_captions) {
      item.append(el("span", { className: "tag", textContent: `${clip.n_captions} caption${clip.n_captions > 1 ? "s" : ""}` }));
    }
    if (state.source && state.source.kind === "clip" && state.source.id === clip.id) item.classList.add("selected");
    item.addEventListener("click", () => chooseClip(clip.id, clip.name));
    list.append(item);
  }
  if (!data.total && !$("clip-filter").value) {
    $("clip-count").textContent = "no clips: start the server with --index or --data, or upload a file";
  } else {
    $("clip-count").textContent = data.total > data.clips.length
      ? `${data.clips.length} of ${data.total} shown` : `${data.total} clip(s)`;
  }
}

async function chooseClip(id, name) {
  releaseUpload();
  state.source = { kind: "clip", id, name };
  $("current-clip").textContent = name;
  $("upload-input").value = "";
  for (const item of $("clip-list").children) item.classList.toggle("selected", item.dataset.id === id);
  showMessage("");
  try {
    const detail = await api(`/api/clips/${idPath(id)}`);
    showCaptions(detail.captions);
    if (!$("phrases").value.trim() && detail.captions.length) {
      $("phrases").value = detail.captions[0].phrases.map((p) => p.text).join("\n");
    }
  } catch (err) {
    showMessage(err.message);
  }
}

function chooseUpload(file) {
  releaseUpload();
  state.source = { kind: "upload", file, url: URL.createObjectURL(file) };
  $("current-clip").textContent = `${file.name} (upload)`;
  for (const item of $("clip-list").children) item.classList.remove("selected");
  showCaptions([]);
  showMessage("");
}

function releaseUpload() {
  if (state.source && state.source.kind === "upload") URL.revokeObjectURL(state.source.url);
}

function idPath(id) {
  // Index ids are relative paths: keep their slashes, escape everything else.
  return id.split("/").map(encodeURIComponent).join("/");
}

function audioUrl(source) {
  return source.kind === "upload" ? source.url : `/api/audio/${idPath(source.id)}`;
}

function showCaptions(captions) {
  const box = $("captions");
  box.replaceChildren();
  $("reference-panel").hidden = !captions.length;
  for (const caption of captions) {
    const chips = caption.phrases.map((p) => {
      const times = p.annotated ? p.segments.map((s) => `${fmt(s.onset)}–${fmt(s.offset)}`).join(", ") : "not annotated";
      const chip = el("span", { className: "chip", title: `ground “${p.text}”` }, [p.text, el("span", { className: "times", textContent: times })]);
      chip.addEventListener("click", () => addPhraseAndGround(p.text));
      return chip;
    });
    box.append(el("div", { className: "caption" }, [el("p", { textContent: caption.text }), ...chips]));
  }
}

function addPhraseAndGround(phrase) {
  const current = $("phrases").value.split(/[\n,;]/).map((p) => p.trim()).filter(Boolean);
  if (!current.includes(phrase)) current.push(phrase);
  $("phrases").value = current.join("\n");
  ground();
}

// ------------------------------------------------------------------ grounding

async function ground() {
  if (!state.source) {
    showMessage("pick a clip from the list or upload an audio file first");
    return;
  }
  const form = new FormData();
  form.append("phrases", $("phrases").value);
  const threshold = $("threshold").value.trim();
  if (threshold) form.append("threshold", threshold);
  if (state.source.kind === "upload") form.append("file", state.source.file, state.source.file.name);
  else form.append("clip_id", state.source.id);
  setBusy(true);
  showMessage("");
  try {
    const result = await api("/api/ground", { method: "POST", body: form });
    await showResult(result);
  } catch (err) {
    const tooBig = state.source.kind === "upload" && state.config &&
      state.source.file.size > state.config.max_upload_mb * 1024 * 1024;
    // A browser may see a refused upload as a dropped connection rather than the 413 answer.
    showMessage(tooBig && err.message.startsWith("could not reach")
      ? `upload too large: the limit is ${state.config.max_upload_mb} MB (acalign serve --max-upload-mb)`
      : err.message);
  } finally {
    setBusy(false);
  }
}

async function showResult(result) {
  state.result = result;
  state.specImage = await loadImage(result.spectrogram.image);
  const player = $("player");
  const src = audioUrl(state.source);
  if (player.dataset.src !== src) {
    player.src = src;
    player.dataset.src = src;
  }
  $("result").hidden = false;
  drawPlot();
  fillSegmentTable(result);
}

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error("could not draw the spectrogram"));
    image.src = url;
  });
}

function fillSegmentTable(result) {
  const body = $("segments").querySelector("tbody");
  body.replaceChildren();
  result.phrases.forEach((p, i) => {
    const color = COLORS[i % COLORS.length];
    if (!p.segments.length) {
      const row = el("tr", { className: "no-segment" }, [
        el("td", {}, [el("span", { className: "swatch", style: `background:${color}` }), p.phrase]),
        el("td", { colSpan: 4, className: "muted", textContent: "no segment above the threshold" }),
      ]);
      body.append(row);
    }
    for (const s of p.segments) {
      const play = el("button", { type: "button", className: "small", textContent: "▶", title: "play this segment" });
      play.addEventListener("click", () => playSegment(s.onset, s.offset));
      const row = el("tr", { className: "segment-row" }, [
        el("td", {}, [el("span", { className: "swatch", style: `background:${color}` }), p.phrase]),
        el("td", { className: "num", textContent: fmt(s.onset) }),
        el("td", { className: "num", textContent: fmt(s.offset) }),
        el("td", { className: "num", textContent: s.score === null ? "" : s.score.toFixed(3) }),
        el("td", {}, [play]),
      ]);
      row.dataset.onset = s.onset;
      row.dataset.offset = s.offset;
      body.append(row);
    }
  });
}

// ------------------------------------------------------------------ drawing

function plotHeight(result) {
  const rows = result.phrases.reduce((h, p) => h + LAYOUT.row + (p.reference ? LAYOUT.lane + 2 : 0), 0);
  return LAYOUT.top + LAYOUT.spec + rows + LAYOUT.axis;
}

function sizeCanvas(canvas, width, height) {
  const ratio = window.devicePixelRatio || 1;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  canvas.style.height = `${height}px`;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  return ctx;
}

function timeToX(t, width) {
  const span = width - LAYOUT.left - LAYOUT.right;
  return LAYOUT.left + (t / state.result.spectrogram.duration) * span;
}

function xToTime(x, width) {
  const span = width - LAYOUT.left - LAYOUT.right;
  return ((x - LAYOUT.left) / span) * state.result.spectrogram.duration;
}

function drawPlot() {
  const result = state.result;
  if (!result) return;
  const canvas = $("plot");
  const width = canvas.parentElement.clientWidth;
  const height = plotHeight(result);
  const ctx = sizeCanvas(canvas, width, height);
  sizeCanvas($("overlay"), width, height);
  ctx.clearRect(0, 0, width, height);
  state.hitboxes = [];
  drawSpectrogram(ctx, width);
  let y = LAYOUT.top + LAYOUT.spec;
  result.phrases.forEach((p, i) => {
    y = drawPhraseRow(ctx, width, y, p, COLORS[i % COLORS.length], result.threshold);
  });
  drawAxis(ctx, width, y);
  canvas.dataset.phrases = String(result.phrases.length);
  drawCursor();
}

function drawSpectrogram(ctx, width) {
  const spec = state.result.spectrogram;
  const x0 = timeToX(0, width);
  const x1 = timeToX(spec.duration, width);
  ctx.imageSmoothingEnabled = true;
  ctx.drawImage(state.specImage, x0, LAYOUT.top, x1 - x0, LAYOUT.spec - 10);
  ctx.fillStyle = "#1f2328";
  ctx.font = "12px system-ui, sans-serif";
  ctx.textBaseline = "middle";
  ctx.fillText("log-mel", 8, LAYOUT.top + 12);
  ctx.fillStyle = "#6a737d";
  ctx.fillText(`${Math.round(spec.fmax)} Hz`, 8, LAYOUT.top + 30);
  ctx.fillText(`${Math.round(spec.fmin)} Hz`, 8, LAYOUT.top + LAYOUT.spec - 18);
}

function drawPhraseRow(ctx, width, top, phrase, color, threshold) {
  const x0 = timeToX(0, width);
  const x1 = timeToX(state.result.spectrogram.duration, width);
  const curveTop = top + 4;
  const curveBottom = curveTop + LAYOUT.curve;
  const yOf = (v) => curveBottom - Math.max(0, Math.min(1, v)) * LAYOUT.curve;
  // frame and label
  ctx.strokeStyle = "#d8dde3";
  ctx.strokeRect(x0, curveTop, x1 - x0, LAYOUT.curve);
  ctx.fillStyle = color;
  ctx.font = "600 12px system-ui, sans-serif";
  ctx.textBaseline = "middle";
  wrapLabel(ctx, phrase.phrase, 8, curveTop + 10, LAYOUT.left - 16);
  // scale
  ctx.fillStyle = "#6a737d";
  ctx.font = "10px system-ui, sans-serif";
  ctx.textAlign = "right";
  ctx.fillText("1", x0 - 4, curveTop + 4);
  ctx.fillText("0", x0 - 4, curveBottom - 3);
  ctx.textAlign = "left";
  // threshold
  if (threshold !== null && threshold !== undefined) {
    ctx.save();
    ctx.setLineDash([4, 3]);
    ctx.strokeStyle = "#adb5bd";
    ctx.beginPath();
    ctx.moveTo(x0, yOf(threshold));
    ctx.lineTo(x1, yOf(threshold));
    ctx.stroke();
    ctx.restore();
  }
  // activation
  ctx.strokeStyle = color;
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  phrase.times.forEach((t, k) => {
    const x = timeToX(t, width);
    const y = yOf(phrase.activation[k]);
    if (k === 0) ctx.moveTo(x, y);
    else ctx.lineTo(x, y);
  });
  ctx.stroke();
  ctx.lineWidth = 1;
  // detected segments: a lane under the curve, plus a light wash over the curve
  const laneTop = curveBottom + 3;
  for (const s of phrase.segments) {
    const sx0 = timeToX(s.onset, width);
    const sx1 = Math.max(sx0 + 2, timeToX(s.offset, width));
    ctx.globalAlpha = 0.12;
    ctx.fillStyle = color;
    ctx.fillRect(sx0, curveTop, sx1 - sx0, LAYOUT.curve);
    ctx.globalAlpha = 1;
    ctx.fillRect(sx0, laneTop, sx1 - sx0, LAYOUT.lane);
    state.hitboxes.push({ x0: sx0, x1: sx1, y0: curveTop, y1: laneTop + LAYOUT.lane, onset: s.onset, offset: s.offset });
  }
  ctx.fillStyle = "#6a737d";
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillText("model", LAYOUT.left - 48, laneTop + LAYOUT.lane / 2);
  let bottom = laneTop + LAYOUT.lane;
  if (phrase.reference) {
    const truthTop = bottom + 2;
    ctx.fillStyle = TRUTH_COLOR;
    for (const s of phrase.reference) {
      const sx0 = timeToX(s.onset, width);
      ctx.fillRect(sx0, truthTop, Math.max(2, timeToX(s.offset, width) - sx0), LAYOUT.lane);
    }
    ctx.fillText("truth", LAYOUT.left - 48, truthTop + LAYOUT.lane / 2);
    bottom = truthTop + LAYOUT.lane;
  }
  return bottom + (LAYOUT.row - LAYOUT.curve - LAYOUT.lane - 7);
}

function wrapLabel(ctx, text, x, y, maxWidth) {
  // Up to two lines; the rest is elided.
  const words = text.split(" ");
  const lines = [""];
  for (const word of words) {
    const trial = lines[lines.length - 1] ? `${lines[lines.length - 1]} ${word}` : word;
    if (ctx.measureText(trial).width <= maxWidth || !lines[lines.length - 1]) lines[lines.length - 1] = trial;
    else if (lines.length < 2) lines.push(word);
    else {
      lines[1] = `${lines[1]}…`;
      break;
    }
  }
  lines.forEach((line, i) => ctx.fillText(line, x, y + i * 15, maxWidth));
}

function niceStep(duration, pixels) {
  const target = duration / Math.max(1, pixels / 70);
  for (const step of [0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600]) {
    if (step >= target) return step;
  }
  return 7200;
}

function drawAxis(ctx, width, y) {
  const duration = state.result.spectrogram.duration;
  const x0 = timeToX(0, width);
  const x1 = timeToX(duration, width);
  const step = niceStep(duration, x1 - x0);
  ctx.strokeStyle = "#6a737d";
  ctx.fillStyle = "#6a737d";
  ctx.font = "11px system-ui, sans-serif";
  ctx.textAlign = "center";
  ctx.beginPath();
  ctx.moveTo(x0, y + 2);
  ctx.lineTo(x1, y + 2);
  for (let t = 0; t <= duration + 1e-9; t += step) {
    const x = timeToX(t, width);
    ctx.moveTo(x, y + 2);
    ctx.lineTo(x, y + 6);
    ctx.fillText(step < 1 ? t.toFixed(1) : String(Math.round(t)), x, y + 15);
  }
  ctx.stroke();
  ctx.textAlign = "left";
  ctx.fillText("time (s)", 8, y + 15);
}

function drawCursor() {
  const overlay = $("overlay");
  const ctx = overlay.getContext("2d");
  const width = overlay.width / (window.devicePixelRatio || 1);
  const height = overlay.height / (window.devicePixelRatio || 1);
  ctx.clearRect(0, 0, width, height);
  if (!state.result) return;
  const x = timeToX($("player").currentTime || 0, width);
  ctx.strokeStyle = "#ffffff";
  ctx.lineWidth = 3;
  ctx.beginPath();
  ctx.moveTo(x, LAYOUT.top);
  ctx.lineTo(x, height - LAYOUT.axis + 2);
  ctx.stroke();
  ctx.strokeStyle = "#d6336c";
  ctx.lineWidth = 1.5;
  ctx.stroke();
}

// ------------------------------------------------------------------ playback

function playSegment(onset, offset) {
  const player = $("player");
  state.stopAt = offset;
  player.currentTime = onset;
  player.play().catch((err) => showMessage(`cannot play: ${err.message}`));
}

function tick() {
  const player = $("player");
  if (state.stopAt !== null && player.currentTime >= state.stopAt) {
    player.pause();
    state.stopAt = null;
  }
  if (state.result) drawCursor();
  requestAnimationFrame(tick);
}

function onPlotClick(event) {
  if (!state.result) return;
  const rect = event.currentTarget.getBoundingClientRect();
  const x = event.clientX - rect.left;
  const y = event.clientY - rect.top;
  const hit = state.hitboxes.find((b) => x >= b.x0 && x <= b.x1 && y >= b.y0 && y <= b.y1);
  if (hit) {
    playSegment(hit.onset, hit.offset);
    return;
  }
  const t = xToTime(x, rect.width);
  if (t >= 0 && t <= state.result.spectrogram.duration) {
    state.stopAt = null;
    $("player").currentTime = t;
  }
}

function onPlotHover(event) {
  const rect = event.currentTarget.getBoundingClientRect();
  const x = event.clientX - rect.left;
  const y = event.clientY - rect.top;
  const hit = state.hitboxes.some((b) => x >= b.x0 && x <= b.x1 && y >= b.y0 && y <= b.y1);
  event.currentTarget.style.cursor = hit ? "pointer" : "crosshair";
}

// ------------------------------------------------------------------ search

async function search(event) {
  event.preventDefault();
  const query = $("search-input").value.trim();
  const list = $("search-results");
  list.replaceChildren();
  if (!query) return;
  try {
    const data = await api(`/api/search?q=${encodeURIComponent(query)}&k=10`);
    if (!data.results.length) list.append(el("li", { className: "muted", textContent: "no result" }));
    for (const hit of data.results) list.append(searchHit(hit, query));
  } catch (err) {
    showMessage(err.message);
  }
}

function searchHit(hit, query) {
  // The media fragment #t=onset,offset makes the player play only the best-matching span.
  const audio = el("audio", { controls: true, preload: "none", src: `${hit.audio_url}#t=${hit.onset},${hit.offset}` });
  const open = el("button", { type: "button", className: "small", textContent: "open", title: "ground the query in this clip" });
  open.addEventListener("click", async () => {
    await chooseClip(hit.id, hit.name);
    $("phrases").value = query;
    ground();
  });
  const cut = hit.name.lastIndexOf("/") + 1;
  const item = el("li", { className: "search-hit", title: hit.name }, [
    el("div", { className: "hit-name", textContent: hit.name.slice(cut) }),
    el("div", { className: "hit-folder muted", textContent: hit.name.slice(0, cut) }),
    el("div", { className: "muted", textContent: `score ${hit.score.toFixed(3)} · span ${fmt(hit.onset)}–${fmt(hit.offset)} s ` }, [open]),
    audio,
  ]);
  item.dataset.id = hit.id;
  return item;
}

// ------------------------------------------------------------------ start

function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

async function start() {
  $("ground-form").addEventListener("submit", (e) => {
    e.preventDefault();
    ground();
  });
  $("upload-input").addEventListener("change", (e) => {
    if (e.target.files.length) chooseUpload(e.target.files[0]);
  });
  $("clip-filter").addEventListener("input", debounce(() => loadClips().catch((err) => showMessage(err.message)), 200));
  $("search-form").addEventListener("submit", search);
  $("overlay").addEventListener("click", onPlotClick);
  $("overlay").addEventListener("mousemove", onPlotHover);
  $("player").addEventListener("pause", () => { state.stopAt = null; });
  window.addEventListener("resize", debounce(drawPlot, 150));
  try {
    await loadConfig();
    await loadClips();
  } catch (err) {
    showMessage(err.message);
  }
  document.body.dataset.ready = "1";
  requestAnimationFrame(tick);
}

document.addEventListener("DOMContentLoaded", start);
