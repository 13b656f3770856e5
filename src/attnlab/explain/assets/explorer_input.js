// The input panel (part 3 of 4): the scores shown on the input (the hovered query's row, a relevance
// method's map with its report-card score, rollout, or the mean attention received) drawn on an image
// (inferno heat map over the patches), on tokens (boxes tinted by weight) or on a series (a band under
// the waveform), and which patch, token or time step the mouse is over.
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
  // Integrated Gradients: how far its attributions are from summing to f(x) - f(removed) (explain.card)
  // the steps the examples ended at (16/32 where some were refined), else the card's steps (a card before 2026-12)
  const ended = card && card.completeness && card.completeness.steps ? Object.keys(card.completeness.steps).join("/") : "";
  const gap = card && card.completeness ? " \u00b7 completeness gap max " + (100 * card.completeness.max).toFixed(1) +
    "% (" + (ended || DATA.card.steps) + " steps)" : "";
  return "relevance: " + state.method + score + gap;
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
