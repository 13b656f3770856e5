
"use strict";
(function () {
  const DATA = JSON.parse(document.getElementById("attnlab-data").textContent);
  const $ = (id) => document.getElementById(id);
  const DPR = Math.max(1, window.devicePixelRatio || 1);
  const VIRIDIS = [68,1,84,72,24,106,71,45,123,66,64,134,59,82,139,51,99,141,44,114,142,38,130,142,33,145,140,
    31,160,136,40,174,128,63,188,115,94,201,98,132,212,75,173,220,48,216,226,25,253,231,37];
  const INFERNO = [0,0,4,11,7,36,33,12,74,61,9,101,87,16,110,113,25,110,138,34,106,163,44,97,188,55,84,210,70,68,
    228,90,49,241,115,29,249,142,9,252,172,17,249,203,53,242,234,105,252,255,164];
  function lut(points) {
    const out = new Uint8ClampedArray(256 * 3), k = points.length / 3 - 1;
    for (let i = 0; i < 256; i++) {
      const x = (i / 255) * k, a = Math.min(Math.floor(x), k - 1), f = x - a;
      for (let c = 0; c < 3; c++) out[i * 3 + c] = Math.round(points[a * 3 + c] * (1 - f) + points[(a + 1) * 3 + c] * f);
    }
    return out;
  }
  const LUT_MAP = lut(VIRIDIS), LUT_HOT = lut(INFERNO);
  // Tokens and time steps: one warm hue whose opacity is the weight, readable over white.
  const ramp = (t) => "rgba(214,69,30," + (0.06 + 0.84 * Math.max(0, Math.min(1, t))).toFixed(3) + ")";

  // ---- decoding --------------------------------------------------------------------------
  function b64bytes(s) {
    const bin = atob(s), out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }
  async function inflate(bytes) {
    if (!DATA.compressed) return bytes;
    if (typeof DecompressionStream === "undefined")
      throw new Error("this browser has no DecompressionStream; write the report with compress=False");
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }
  const decoded = new Map();
  function decodeMap(key, entry) {  // -> {heads, n, m, top, levels: Uint8Array(H*N*M), scale: Float32Array(H*N)}
    if (!decoded.has(key)) {
      decoded.set(key, (async () => {
        const raw = await inflate(b64bytes(entry.q));
        const count = entry.heads * entry.n * entry.m;
        let levels = raw;
        if (entry.bits === 4) {
          levels = new Uint8Array(count);
          for (let i = 0; i < count; i++) levels[i] = (i & 1) ? raw[i >> 1] & 15 : raw[i >> 1] >> 4;
        }
        const scale = new Float32Array(b64bytes(entry.scale).buffer);
        return { heads: entry.heads, n: entry.n, m: entry.m, top: (1 << entry.bits) - 1, levels, scale };
      })());
    }
    return decoded.get(key);
  }
  async function decodeInput(exIndex) {
    const key = "input:" + exIndex;
    if (!decoded.has(key)) {
      decoded.set(key, (async () => {
        const inp = DATA.examples[exIndex].input;
        if (inp.type === "tokens") return inp;
        const bytes = await inflate(b64bytes(inp.data));
        if (inp.type === "image") {
          const c = document.createElement("canvas");
          c.width = inp.w; c.height = inp.h;
          const g = c.getContext("2d"), img = g.createImageData(inp.w, inp.h);
          for (let p = 0, q = 0; p < inp.w * inp.h; p++, q += 3) {
            img.data[p * 4] = bytes[q]; img.data[p * 4 + 1] = bytes[q + 1]; img.data[p * 4 + 2] = bytes[q + 2];
            img.data[p * 4 + 3] = 255;
          }
          g.putImageData(img, 0, 0);
          return { type: "image", canvas: c, w: inp.w, h: inp.h };
        }
        const series = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
        let lo = Infinity, hi = -Infinity;
        for (const x of series) { if (x < lo) lo = x; if (x > hi) hi = x; }
        return { type: "series", series, lo, hi };
      })());
    }
    return decoded.get(key);
  }

  // ---- state and views --------------------------------------------------------------------
  // The layer and head the page opens on (attnlab explain --layer/--head; a negative layer counts from the last).
  const firstLayer = (() => {
    const v = DATA.defaultLayer, n = DATA.examples[0].layers.length;
    return typeof v !== "number" ? 0 : v < 0 ? Math.max(0, n + v) : v;
  })();
  const state = { ex: 0, layer: firstLayer, head: typeof DATA.defaultHead === "number" ? DATA.defaultHead : "mean",
    scale: "row", query: null, key: null, pinned: false, opacity: 0.6, method: DATA.defaultMethod || "attention" };
  let view = null, input = null, rolloutView = null, offKey = null, generation = 0;
  const off = document.createElement("canvas"), offCtx = off.getContext("2d");
  const ex = () => DATA.examples[state.ex];
  // An example without attention maps (a linear forecaster's exact attribution): its only views are its
  // relevance methods, drawn on the input; the map panel, the layer / head selectors and hovering step aside.
  const hasAttention = () => ex().layers.length > 0;

  function buildView(d, head, key, label) {
    const { n, m } = d, values = new Float32Array(n * m);
    const heads = head === "mean" ? Array.from({ length: d.heads }, (_, h) => h) : [head];
    for (const h of heads) {
      const base = h * n * m;
      for (let i = 0; i < n; i++) {
        const s = d.scale[h * n + i] / d.top / heads.length, o = i * m;
        if (s === 0) continue;
        for (let j = 0; j < m; j++) values[o + j] += d.levels[base + o + j] * s;
      }
    }
    const rowMax = new Float32Array(n);
    let max = 0;
    for (let i = 0; i < n; i++) {
      let r = 0;
      for (let j = 0, o = i * m; j < m; j++) if (values[o + j] > r) r = values[o + j];
      rowMax[i] = r; if (r > max) max = r;
    }
    return { key, n, m, values, rowMax, max, label };
  }
  async function computeView() {
    const e = ex();
    if (!hasAttention())  // positions only: no weights to decode, nothing to hover
      return { key: state.ex + ":none", n: e.tokens.length, m: e.tokens.length, values: null, rowMax: null, max: 0,
        label: "no attention maps" };
    if (state.layer === "rollout") {
      const d = await decodeMap(state.ex + ":rollout", e.rollout);
      return buildView(d, 0, state.ex + ":rollout", "rollout (all layers)");
    }
    const entry = e.layers[state.layer];
    const d = await decodeMap(state.ex + ":" + state.layer, entry);
    const head = state.head === "mean" || state.head >= d.heads ? "mean" : state.head;
    return buildView(d, head, state.ex + ":" + state.layer + ":" + head,
      entry.name + " \u00b7 " + (head === "mean" ? "mean of " + d.heads + " heads" : "head " + head));
  }
  async function refresh() {
    const mine = ++generation;
    $("status").textContent = "decoding\u2026";
    try {
      const [v, inp] = await Promise.all([computeView(), decodeInput(state.ex)]);
      let roll = null;
      if (ex().rollout) {
        const d = await decodeMap(state.ex + ":rollout", ex().rollout);
        roll = buildView(d, 0, state.ex + ":rollout", "rollout");
      }
      if (mine !== generation) return;
      view = v; input = inp; rolloutView = roll;
      if (state.query !== null && state.query >= view.n) { state.query = null; state.pinned = false; }
      if (state.key !== null && state.key >= view.m) state.key = null;
      $("status").textContent = "";
      layout();
    } catch (err) {
      $("status").innerHTML = "";
      const span = document.createElement("span");
      span.className = "error"; span.textContent = "Could not decode the data: " + err.message;
      $("status").appendChild(span);
    }
  }

  // ---- labels ------------------------------------------------------------------------------
  function rowLabel(i) { const t = ex().tokens; return view && view.n === t.length ? t[i] : "#" + i; }
  function colLabel(j) {
    const e = ex();
    if (e.keyTokens && e.keyTokens.length === view.m) return e.keyTokens[j];
    return e.tokens.length === view.m ? e.tokens[j] : "#" + j;
  }
  const fmt = (x) => (x >= 0.01 || x === 0 ? x.toFixed(4) : x.toExponential(2));
  const selfAttention = () => view && view.values !== null && view.n === view.m;

  // ---- the map ---------------------------------------------------------------------------
  const mapCanvas = $("map"), mapCtx = mapCanvas.getContext("2d");
  let geom = null;
  function paintOffscreen() {
    const key = view.key + ":" + state.scale;
    if (offKey === key) return;
    off.width = view.m; off.height = view.n;
    const img = offCtx.createImageData(view.m, view.n), px = img.data, { n, m, values, rowMax, max } = view;
    for (let i = 0; i < n; i++) {
      const norm = state.scale === "row" ? rowMax[i] : max, inv = norm > 0 ? 1 / norm : 0;
      for (let j = 0; j < m; j++) {
        let t = values[i * m + j] * inv;
        if (state.scale === "sqrt") t = Math.sqrt(t);
        const c = Math.min(255, Math.round(t * 255)) * 3, p = (i * m + j) * 4;
        px[p] = LUT_MAP[c]; px[p + 1] = LUT_MAP[c + 1]; px[p + 2] = LUT_MAP[c + 2]; px[p + 3] = 255;
      }
    }
    offCtx.putImageData(img, 0, 0);
    offKey = key;
  }
  function sizeCanvas(canvas, w, h) {
    canvas.width = Math.round(w * DPR); canvas.height = Math.round(h * DPR);
    canvas.style.width = w + "px"; canvas.style.height = h + "px";
    const g = canvas.getContext("2d"); g.setTransform(DPR, 0, 0, DPR, 0, 0);
    return g;
  }
  function layoutMap() {
    const avail = Math.max(260, Math.min(640, mapCanvas.parentElement.clientWidth || 560));
    const labels = view.n <= 48 && view.m <= 48;
    const left = labels ? 70 : 6, topM = labels ? 70 : 6;
    const plotW = avail - left - 6, plotH = Math.min(640, plotW * view.n / view.m);
    sizeCanvas(mapCanvas, avail, topM + plotH + 34);
    geom = { left, top: topM, w: plotW, h: plotH, labels };
  }
  function drawMap() {
    paintOffscreen();
    const g = mapCtx, { left, top, w, h } = geom, { n, m } = view;
    g.clearRect(0, 0, mapCanvas.width, mapCanvas.height);
    g.imageSmoothingEnabled = w < m || h < n;
    g.drawImage(off, 0, 0, m, n, left, top, w, h);
    const ch = h / n, cw = w / m;
    if (geom.labels) {
      g.fillStyle = "#5f6b7a"; g.font = "10px system-ui, sans-serif"; g.textBaseline = "middle";
      g.textAlign = "right";
      for (let i = 0; i < n; i++) g.fillText(clip(rowLabel(i), 10), left - 4, top + (i + 0.5) * ch);
      g.save(); g.textAlign = "left";
      for (let j = 0; j < m; j++) {
        g.save(); g.translate(left + (j + 0.5) * cw, top - 4); g.rotate(-Math.PI / 2);
        g.fillText(clip(colLabel(j), 10), 0, 0); g.restore();
      }
      g.restore();
    }
    if (state.query !== null) {
      g.lineWidth = 1.5; g.strokeStyle = "#ffffff";
      g.strokeRect(left + 0.5, top + state.query * ch, w - 1, Math.max(ch, 1.5));
      g.strokeStyle = "#e4572e"; g.lineWidth = 1;
      g.strokeRect(left - 1.5, top + state.query * ch - 1, w + 3, Math.max(ch, 1.5) + 2);
    }
    if (state.key !== null) {
      g.strokeStyle = "rgba(255,255,255,0.8)"; g.lineWidth = 1;
      g.strokeRect(left + state.key * cw, top, Math.max(cw, 1), h);
    }
    drawLegend(g, left, top + h + 10, Math.min(w, 240), 10);
  }
  function drawLegend(g, x, y, w, h) {
    for (let k = 0; k < w; k++) {
      const t = k / (w - 1);
      const c = Math.round(t * 255) * 3;
      g.fillStyle = "rgb(" + LUT_MAP[c] + "," + LUT_MAP[c + 1] + "," + LUT_MAP[c + 2] + ")";
      g.fillRect(x + 12 + k, y, 1.5, h);
    }
    const top = state.scale === "row" ? "row max" : fmt(view.max) + (state.scale === "sqrt" ? " (sqrt scale)" : "");
    g.fillStyle = "#5f6b7a"; g.font = "11px system-ui, sans-serif"; g.textBaseline = "middle"; g.textAlign = "left";
    g.fillText("0", x, y + h / 2);
    g.fillText(top, x + w + 18, y + h / 2);
  }
  function clip(s, k) { s = String(s); return s.length > k ? s.slice(0, k - 1) + "\u2026" : s; }
  function mapHit(evt) {
    if (!geom || !view.values) return null;
    const r = mapCanvas.getBoundingClientRect(), x = evt.clientX - r.left - geom.left, y = evt.clientY - r.top - geom.top;
    if (x < 0 || y < 0 || x >= geom.w || y >= geom.h) return null;
    return { i: Math.floor((y / geom.h) * view.n), j: Math.floor((x / geom.w) * view.m) };
  }

  // ---- scores shown on the input -----------------------------------------------------------
  function rowOf(v, i) { return v.values.subarray(i * v.m, (i + 1) * v.m); }
  function meanRow(v) {
    const out = new Float32Array(v.m);
    for (let i = 0; i < v.n; i++) for (let j = 0; j < v.m; j++) out[j] += v.values[i * v.m + j] / v.n;
    return out;
  }
  // Key scores (length M) to show on the input, with a caption.
  // A relevance method's map (explain.relevance): one score per non-prefix token; negative
  // scores (evidence against the class) are drawn as zero.
  function methodScores() {
    const e = ex(), m = e.methods && e.methods[state.method];
    if (state.method === "attention" || !m || view.m !== e.numPrefix + m.length) return null;
    const out = new Float32Array(view.m);
    for (let j = 0; j < m.length; j++) out[e.numPrefix + j] = Math.max(0, m[j]);
    return out;
  }
  function methodCaption() {
    const card = DATA.card && DATA.card.methods && DATA.card.methods[state.method];
    const score = card ? " \u00b7 positive perturbation AUC " + card.positive[0].toFixed(3) + " (random " +
      (DATA.card.methods.random ? DATA.card.methods.random.positive[0].toFixed(3) : "n/a") + ", lower is better)" : "";
    return "relevance: " + state.method + score;
  }
  function inputScores() {
    const e = ex();
    if (state.query !== null) return { scores: rowOf(view, state.query), caption: "where " + rowLabel(state.query) + " attends \u00b7 " + view.label };
    const ms = methodScores();
    if (ms) return { scores: ms, caption: methodCaption(), method: true };
    if (!view.values) return { scores: new Float32Array(view.m), caption: "no map for this example" };
    if (rolloutView && rolloutView.m === view.m) {
      if (e.numPrefix >= 1) return { scores: rowOf(rolloutView, 0), caption: "rollout: what flows into " + e.tokens[0] + " (all layers)" };
      return { scores: meanRow(rolloutView), caption: "rollout: mean over all tokens (all layers)" };
    }
    return { scores: meanRow(view), caption: "mean attention received \u00b7 " + view.label };
  }
  function normalise(scores, from, to) {
    let hi = 0;
    for (let j = from; j < to; j++) if (scores[j] > hi) hi = scores[j];
    const out = new Float32Array(to - from);
    for (let j = from; j < to; j++) out[j - from] = hi > 0 ? scores[j] / hi : 0;
    return out;
  }

  // ---- input panel: image ------------------------------------------------------------------
  const inCanvas = $("input");
  let inGeom = null;
  const heatCanvas = document.createElement("canvas"), heatCtx = heatCanvas.getContext("2d");
  function layoutInput() {
    const avail = Math.max(240, Math.min(640, inCanvas.parentElement.clientWidth || 480));
    if (input.type === "image") {
      const s = Math.min(avail / input.w, 560 / input.h);
      sizeCanvas(inCanvas, input.w * s, input.h * s);
      inGeom = { w: input.w * s, h: input.h * s };
    } else if (input.type === "series") {
      sizeCanvas(inCanvas, avail, 250);
      inGeom = { w: avail, h: 250, plotH: 190, bandY: 200, bandH: 26 };
    } else {
      layoutTokens(avail - 14);  // room for the scroll bar of a long text
    }
  }
  function drawImagePanel() {
    const g = inCanvas.getContext("2d"), e = ex(), { w, h } = inGeom;
    g.setTransform(DPR, 0, 0, DPR, 0, 0);
    g.clearRect(0, 0, w, h);
    g.imageSmoothingEnabled = w < 2 * input.w;  // small images (MNIST, CIFAR): show crisp pixels
    g.drawImage(input.canvas, 0, 0, w, h);
    g.imageSmoothingEnabled = true;
    const [gh, gw] = e.grid, p = e.numPrefix;
    const { scores, caption } = inputScores();
    if (view.m !== p + gh * gw) { $("input-caption").textContent = "image (this layer's keys are not the patches)"; return; }
    const t = normalise(scores, p, p + gh * gw);
    heatCanvas.width = gw; heatCanvas.height = gh;
    const img = heatCtx.createImageData(gw, gh);
    for (let k = 0; k < gw * gh; k++) {
      const c = Math.min(255, Math.round(t[k] * 255)) * 3;
      img.data[k * 4] = LUT_HOT[c]; img.data[k * 4 + 1] = LUT_HOT[c + 1]; img.data[k * 4 + 2] = LUT_HOT[c + 2];
      img.data[k * 4 + 3] = Math.round(255 * state.opacity * (0.25 + 0.75 * t[k]));
    }
    heatCtx.putImageData(img, 0, 0);
    g.drawImage(heatCanvas, 0, 0, w, h);  // browser bilinear upsampling
    if (state.query !== null && state.query >= p && selfAttention()) {
      const k = state.query - p, r = Math.floor(k / gw), c = k % gw;
      g.lineWidth = 2; g.strokeStyle = "#ffffff";
      g.strokeRect((c * w) / gw, (r * h) / gh, w / gw, h / gh);
    }
    let extra = "";
    if (p > 0 && !inputScores().method) extra = " \u00b7 " + e.tokens[0] + " itself: " + fmt(scores[0]);
    $("input-caption").textContent = caption + extra;
  }
  function imageHit(evt) {
    const e = ex(), r = inCanvas.getBoundingClientRect(), [gh, gw] = e.grid;
    const x = evt.clientX - r.left, y = evt.clientY - r.top;
    if (x < 0 || y < 0 || x >= inGeom.w || y >= inGeom.h) return null;
    return e.numPrefix + Math.floor((y / inGeom.h) * gh) * gw + Math.floor((x / inGeom.w) * gw);
  }

  // ---- input panel: tokens -----------------------------------------------------------------
  let boxes = [];
  const TOKEN_FONT = "13px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace";
  function tokenLabels() { return Array.from({ length: view.m }, (_, j) => colLabel(j)); }
  function layoutTokens(avail) {
    const labels = tokenLabels(), g = inCanvas.getContext("2d");
    g.font = TOKEN_FONT;
    boxes = [];
    let x = 4, y = 4;
    const lineH = 24, pad = 5;
    for (let j = 0; j < labels.length; j++) {
      const text = clip(labels[j].replace(/\n/g, "\u21b5"), 40) || "\u2423";
      const w = Math.ceil(g.measureText(text).width) + 2 * pad;
      if (x + w > avail - 4 && x > 4) { x = 4; y += lineH + 4; }
      boxes.push({ x, y, w, h: lineH, text });
      x += w + 4;
    }
    sizeCanvas(inCanvas, avail, y + lineH + 8);
    inGeom = { w: avail, h: y + lineH + 8 };
  }
  function drawTokens() {
    const g = inCanvas.getContext("2d");
    g.setTransform(DPR, 0, 0, DPR, 0, 0);
    g.clearRect(0, 0, inGeom.w, inGeom.h);
    const { scores, caption } = inputScores(), t = normalise(scores, 0, view.m);
    g.font = TOKEN_FONT; g.textBaseline = "middle"; g.textAlign = "left";
    for (let j = 0; j < boxes.length; j++) {
      const b = boxes[j];
      g.fillStyle = "#f0f2f5"; roundRect(g, b.x, b.y, b.w, b.h, 4); g.fill();
      g.fillStyle = ramp(t[j]); roundRect(g, b.x, b.y, b.w, b.h, 4); g.fill();
      g.fillStyle = t[j] > 0.6 ? "#ffffff" : "#1d2430";
      g.fillText(b.text, b.x + 5, b.y + b.h / 2 + 1);
    }
    if (state.query !== null && selfAttention() && boxes[state.query]) {
      const b = boxes[state.query];
      g.lineWidth = 2; g.strokeStyle = "#2f6fde"; roundRect(g, b.x - 1, b.y - 1, b.w + 2, b.h + 2, 5); g.stroke();
    }
    $("input-caption").textContent = caption;
  }
  function roundRect(g, x, y, w, h, r) {
    g.beginPath(); g.moveTo(x + r, y); g.arcTo(x + w, y, x + w, y + h, r); g.arcTo(x + w, y + h, x, y + h, r);
    g.arcTo(x, y + h, x, y, r); g.arcTo(x, y, x + w, y, r); g.closePath();
  }
  function tokenHit(evt) {
    const r = inCanvas.getBoundingClientRect(), x = evt.clientX - r.left, y = evt.clientY - r.top;
    for (let j = 0; j < boxes.length; j++) {
      const b = boxes[j];
      if (x >= b.x && x < b.x + b.w && y >= b.y && y < b.y + b.h) return j;
    }
    return null;
  }

  // ---- input panel: series -----------------------------------------------------------------
  function drawSeries() {
    const g = inCanvas.getContext("2d"), e = ex(), { w, plotH, bandY, bandH } = inGeom, s = input.series;
    g.setTransform(DPR, 0, 0, DPR, 0, 0);
    g.clearRect(0, 0, inGeom.w, inGeom.h);
    const p = e.numPrefix, steps = view.m - p;
    const { scores, caption } = inputScores(), t = normalise(scores, p, view.m);
    for (let k = 0; k < steps; k++) {  // attention band, and a light tint behind the waveform
      const x0 = (k * w) / steps, x1 = ((k + 1) * w) / steps;
      g.fillStyle = "#f0f2f5"; g.fillRect(x0, bandY, x1 - x0 + 0.5, bandH);
      g.fillStyle = ramp(t[k]); g.fillRect(x0, bandY, x1 - x0 + 0.5, bandH);
      g.fillStyle = ramp(t[k] * state.opacity * 0.6); g.fillRect(x0, 0, x1 - x0 + 0.5, plotH);
    }
    const span = input.hi - input.lo || 1, yOf = (v) => plotH - 6 - ((v - input.lo) / span) * (plotH - 12);
    g.strokeStyle = "#1d2430"; g.lineWidth = 1; g.beginPath();
    if (s.length <= w * 2) {
      for (let i = 0; i < s.length; i++) { const x = ((i + 0.5) * w) / s.length; i ? g.lineTo(x, yOf(s[i])) : g.moveTo(x, yOf(s[i])); }
    } else {  // min/max envelope per pixel column keeps long signals fast and faithful
      for (let px = 0; px < w; px++) {
        const a = Math.floor((px * s.length) / w), b = Math.max(a + 1, Math.floor(((px + 1) * s.length) / w));
        let lo = Infinity, hi = -Infinity;
        for (let i = a; i < b; i++) { if (s[i] < lo) lo = s[i]; if (s[i] > hi) hi = s[i]; }
        g.moveTo(px + 0.5, yOf(lo)); g.lineTo(px + 0.5, yOf(hi) - 0.5);
      }
    }
    g.stroke();
    if (state.query !== null && state.query >= p && selfAttention()) {
      const k = state.query - p;
      g.strokeStyle = "#2f6fde"; g.lineWidth = 2;
      g.strokeRect((k * w) / steps, 1, Math.max(w / steps, 2), bandY + bandH - 1);
    }
    g.fillStyle = "#5f6b7a"; g.font = "11px system-ui, sans-serif"; g.textBaseline = "top";
    g.fillText((inputScores().method ? "relevance" : "attention") + " over time (" + steps + " steps, " + s.length + " samples)", 2, bandY + bandH + 4);
    $("input-caption").textContent = caption + (p > 0 ? " \u00b7 " + e.tokens[0] + ": " + fmt(scores[0]) : "");
  }
  function seriesHit(evt) {
    const r = inCanvas.getBoundingClientRect(), x = evt.clientX - r.left, steps = view.m - ex().numPrefix;
    if (x < 0 || x >= inGeom.w) return null;
    return ex().numPrefix + Math.min(steps - 1, Math.floor((x / inGeom.w) * steps));
  }

  // ---- readout, drawing and events ---------------------------------------------------------
  function readout() {
    const lines = [];
    if (!view.values) {  // no attention: the chosen map's strongest positions
      const ms = methodScores() || new Float32Array(view.m), p = ex().numPrefix;
      const order = Array.from(ms.keys()).filter((j) => j >= p).sort((a, b) => ms[b] - ms[a]).slice(0, 6);
      lines.push("no attention maps: this example's map is " + state.method + " (below, and behind the input)");
      lines.push("top positions: " + order.map((j) => colLabel(j) + " " + fmt(ms[j])).join(", "));
    } else if (state.query === null) {
      lines.push(view.label + " \u00b7 " + view.n + " queries \u00d7 " + view.m + " keys \u00b7 max weight " + fmt(view.max));
      lines.push("hover the map or the input to inspect a query" );
    } else {
      const row = rowOf(view, state.query);
      let head = "query " + state.query + " \u00ab" + rowLabel(state.query) + "\u00bb" + (state.pinned ? " (pinned)" : "");
      if (state.key !== null) head += " \u2192 key " + state.key + " \u00ab" + colLabel(state.key) + "\u00bb: " + fmt(row[state.key]);
      lines.push(head + "   [" + view.label + "]");
      const order = Array.from(row.keys()).sort((a, b) => row[b] - row[a]).slice(0, 6);
      lines.push("top keys: " + order.map((j) => colLabel(j) + " " + fmt(row[j])).join(", "));
    }
    $("readout").textContent = lines.join("\n");
  }
  let pending = false;
  function draw() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      if (!view) return;
      if (view.values) drawMap();
      if (input.type === "image") drawImagePanel();
      else if (input.type === "series") drawSeries();
      else drawTokens();
      readout();
    });
  }
  function layout() {
    const attention = view.values !== null;
    mapCanvas.closest("figure").hidden = !attention;
    $("help").hidden = !attention;
    if (attention) layoutMap();
    layoutInput();
    $("map-caption").textContent = view.label + " \u00b7 rows: queries, columns: keys";
    draw();
  }

  function setQuery(i, j) {
    if (state.pinned) { if (j !== undefined) { state.key = j; draw(); } return; }
    state.query = i; state.key = j === undefined ? null : j; draw();
  }
  mapCanvas.addEventListener("mousemove", (evt) => { if (!view || !view.values) return; const hit = mapHit(evt); hit ? setQuery(hit.i, hit.j) : setQuery(null); });
  mapCanvas.addEventListener("mouseleave", () => setQuery(null));
  function inputHit(evt) {
    if (!view || !selfAttention()) return null;
    if (input.type === "image") return view.m === ex().numPrefix + ex().grid[0] * ex().grid[1] ? imageHit(evt) : null;
    if (input.type === "series") return seriesHit(evt);
    return tokenHit(evt);
  }
  inCanvas.addEventListener("mousemove", (evt) => { const i = inputHit(evt); setQuery(i); });
  inCanvas.addEventListener("mouseleave", () => setQuery(null));
  function togglePin(hitFn) {
    return (evt) => {
      if (!view) return;
      const hit = hitFn(evt);
      if (state.pinned) { state.pinned = false; if (hit !== null) state.query = typeof hit === "object" ? hit.i : hit; }
      else if (hit !== null) { state.query = typeof hit === "object" ? hit.i : hit; state.pinned = true; }
      draw();
    };
  }
  mapCanvas.addEventListener("click", togglePin(mapHit));
  inCanvas.addEventListener("click", togglePin(inputHit));

  function fillSelectors() {
    const e = ex(), layerSel = $("layer"), headSel = $("head");
    layerSel.innerHTML = "";
    e.layers.forEach((l, i) => layerSel.add(new Option(l.name + "  (" + l.heads + "h, " + l.n + "\u00d7" + l.m + ")", String(i))));
    if (e.rollout) layerSel.add(new Option("rollout (all layers)", "rollout"));
    if (state.layer !== "rollout" && state.layer >= e.layers.length) state.layer = 0;
    if (state.layer === "rollout" && !e.rollout) state.layer = 0;
    layerSel.value = String(state.layer);
    headSel.innerHTML = "";
    headSel.add(new Option("mean of heads", "mean"));
    const attention = e.layers.length > 0;
    const heads = !attention || state.layer === "rollout" ? 0 : e.layers[state.layer].heads;
    for (let h = 0; h < heads; h++) headSel.add(new Option("head " + h, String(h)));
    if (state.head !== "mean" && state.head >= heads) state.head = "mean";
    headSel.value = String(state.head);
    headSel.disabled = state.layer === "rollout";
    const methodSel = $("method"), names = Object.keys(e.methods || {});
    methodSel.innerHTML = "";
    if (attention) methodSel.add(new Option("attention (layer and head above)", "attention"));
    names.forEach((m) => methodSel.add(new Option(m + (DATA.card && DATA.card.best === m ? " \u2605" : ""), m)));
    if (!names.includes(state.method)) state.method = attention || !names.length ? "attention" : names[0];
    methodSel.value = state.method;
    $("method-label").style.display = names.length ? "" : "none";
    for (const id of ["layer", "head", "scale"]) $(id).parentElement.style.display = attention ? "" : "none";
  }
  function showExample() {
    const e = ex();
    offKey = null;
    fillSelectors();
    const summary = $("summary");
    summary.innerHTML = "";
    const chip = (label, value, cls) => {
      const s = document.createElement("span"); s.className = "chip" + (cls ? " " + cls : "");
      const b = document.createElement("b"); b.textContent = label + " ";
      s.appendChild(b); s.appendChild(document.createTextNode(value)); summary.appendChild(s);
    };
    chip("example", e.title);
    const has = (v) => v !== null && v !== undefined;
    // "cat (0.93)" counts as the label "cat": compare the part before a trailing score.
    const bare = (v) => String(v).replace(/\s*\([^()]*\)\s*$/, "");
    const verdict = has(e.prediction) && has(e.label) ? (bare(e.prediction) === bare(e.label) ? "good" : "bad") : "";
    if (has(e.prediction)) chip("prediction", String(e.prediction), verdict);
    if (has(e.label)) chip("label", String(e.label));
    chip(e.kind, e.tokens.length + " tokens" + (e.grid ? " (" + e.numPrefix + " prefix + " + e.grid[0] + "\u00d7" + e.grid[1] + " patches)" : ""));
    refresh();
  }
  $("example").addEventListener("change", (evt) => { state.ex = +evt.target.value; state.query = null; state.pinned = false; showExample(); });
  $("layer").addEventListener("change", (evt) => { const v = evt.target.value; state.layer = v === "rollout" ? v : +v; fillSelectors(); refresh(); });
  $("head").addEventListener("change", (evt) => { const v = evt.target.value; state.head = v === "mean" ? v : +v; refresh(); });
  $("method").addEventListener("change", (evt) => { state.method = evt.target.value; draw(); });
  $("scale").addEventListener("change", (evt) => { state.scale = evt.target.value; draw(); });
  $("opacity").addEventListener("input", (evt) => { state.opacity = +evt.target.value / 100; draw(); });
  document.addEventListener("keydown", (evt) => {
    if (evt.target && evt.target.tagName === "SELECT") return;
    const e = ex(), layers = e.layers.map((_, i) => i).concat(e.rollout ? ["rollout"] : []);
    if (evt.key === "Escape") { state.pinned = false; state.query = null; draw(); return; }
    if (evt.key === "ArrowUp" || evt.key === "ArrowDown") {
      const k = layers.indexOf(state.layer) + (evt.key === "ArrowDown" ? 1 : -1);
      if (k >= 0 && k < layers.length) { state.layer = layers[k]; fillSelectors(); refresh(); }
      evt.preventDefault();
    } else if ((evt.key === "ArrowLeft" || evt.key === "ArrowRight") && state.layer !== "rollout" && e.layers.length) {
      const heads = ["mean"].concat(Array.from({ length: e.layers[state.layer].heads }, (_, h) => h));
      const k = heads.indexOf(state.head) + (evt.key === "ArrowRight" ? 1 : -1);
      if (k >= 0 && k < heads.length) { state.head = heads[k]; fillSelectors(); refresh(); }
      evt.preventDefault();
    }
  });
  let resizeTimer = null;
  window.addEventListener("resize", () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(() => { if (view) layout(); }, 120); });

  // ---- header ------------------------------------------------------------------------------
  $("title").textContent = DATA.title;
  document.title = DATA.title;
  const meta = $("meta");
  for (const [k, v] of Object.entries(DATA.meta || {})) {
    const d = document.createElement("div"), dt = document.createElement("dt"), dd = document.createElement("dd");
    dt.textContent = k; dd.textContent = typeof v === "string" ? v : JSON.stringify(v);
    d.appendChild(dt); d.appendChild(dd); meta.appendChild(d);
  }
  const exSel = $("example");
  DATA.examples.forEach((e, i) => exSel.add(new Option((i + 1) + ". " + e.title, String(i))));
  if (DATA.examples.length < 2) $("example-label").style.display = "none";
  showExample();
})();
