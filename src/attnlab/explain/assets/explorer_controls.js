// The controls (part 4 of 4): the readout line, drawing once per animation frame, hovering and pinning
// a query, the example / layer / head / method / scale selectors and their arrow keys, the header, and
// the first draw. Last: it runs once every other part has declared its names.
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
