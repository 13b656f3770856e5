// The attention map (part 2 of 4): queries as rows, keys as columns, viridis, painted once per view
// into an offscreen canvas of one pixel per weight and scaled onto the page; labels, the hovered row
// and column, the colour legend, and which cell the mouse is over.
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
