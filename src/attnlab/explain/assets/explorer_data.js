// The explorer's data and selection (part 1 of 4). The report's embedded JSON decoded (base64, deflate,
// 4- or 8-bit levels with a scale per row) into maps and inputs, the page state (example, layer, head,
// method, hovered query and key) and the view it selects. _report_assets.py joins the four parts, in
// order, inside one closure, so they share these names and the page keeps one inline script.
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
