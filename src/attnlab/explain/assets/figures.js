"use strict";
// Figures drawn in Python under the explorer (a forecast's SVG: explain/forecast_view.py). Shows the
// selected example's figure and, when the layer / head / map selectors change (by mouse or by the
// explorer's arrow keys), copies that choice's precomputed relevance into the bands. Nothing here
// computes relevance: the values come from Python, so the page and the PNG agree.
(function () {
  const figures = Array.from(document.querySelectorAll(".example-figure"));
  if (!figures.length) return;
  const $ = (id) => document.getElementById(id);
  const opacity = (r) => (0.04 + 0.56 * r).toFixed(4);  // forecast_view.band_opacity
  function choose(keys) {
    const method = $("method").value, layer = $("layer").value, head = $("head").value || "mean";
    if (method && method !== "attention" && keys.includes("method:" + method)) return "method:" + method;
    return layer === "rollout" ? "rollout" : layer + "/" + (head === "mean" || head === "" ? "mean" : head);
  }
  function sync() {
    const current = $("example").value || "0";
    for (const fig of figures) {
      fig.hidden = fig.dataset.example !== current;
      const svg = fig.querySelector("svg[data-relevance]");
      if (fig.hidden || !svg) continue;
      const values = JSON.parse(svg.dataset.relevance), labels = JSON.parse(svg.dataset.labels);
      const key = choose(Object.keys(values)), row = values[key];
      if (!row) continue;
      svg.querySelectorAll("rect.band").forEach((band, k) => {
        band.setAttribute("data-r", String(row[k]));
        band.setAttribute("fill-opacity", opacity(row[k]));
      });
      svg.dataset.shown = key;
      const label = svg.querySelector(".relevance-label");
      if (label) label.textContent = "relevance: " + labels[key];
    }
  }
  ["example", "layer", "head", "method"].forEach((id) => $(id).addEventListener("change", sync));
  document.addEventListener("keydown", sync);  // registered after the explorer's: its selectors are already set
  sync();
})();
