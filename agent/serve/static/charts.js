// Learning-curve charts in plain SVG: one chart per eval setting, x = model versions in registry order,
// y = held-out accuracy; first try (solid) and final (dashed) with 95% interval bars. No libraries.
(function () {
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";

function svgEl(tag, attrs, text) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

function pct(x) { return (100 * x).toFixed(1) + "%"; }

function drawCurve(curve) {
  const pts = curve.points;
  const W = Math.max(380, 130 + 90 * pts.length), H = 230;
  const m = { l: 48, r: 48, t: 12, b: 52 };
  const x = (i) => m.l + (pts.length === 1 ? (W - m.l - m.r) / 2 : i * (W - m.l - m.r) / (pts.length - 1));
  const y = (v) => m.t + (1 - v) * (H - m.t - m.b);
  const svg = svgEl("svg", { class: "curve", width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img",
                             "data-key": curve.key });
  svg.appendChild(svgEl("title", {}, `${curve.label}: held-out accuracy per version`));
  for (const v of [0, 0.25, 0.5, 0.75, 1]) {
    svg.appendChild(svgEl("line", { class: "grid", x1: m.l, x2: W - m.r, y1: y(v), y2: y(v) }));
    svg.appendChild(svgEl("text", { x: m.l - 6, y: y(v) + 4, "text-anchor": "end" }, `${v * 100}%`));
  }
  svg.appendChild(svgEl("line", { class: "axis", x1: m.l, x2: m.l, y1: m.t, y2: H - m.b }));
  svg.appendChild(svgEl("line", { class: "axis", x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b }));
  pts.forEach((p, i) => {
    const label = svgEl("text", { x: x(i), y: H - m.b + 14, "text-anchor": "middle" }, p.version);
    svg.appendChild(label);
    svg.appendChild(svgEl("text", { x: x(i), y: H - m.b + 27, "text-anchor": "middle" }, `${p.status}, n=${p.n}`));
  });
  for (const [key, dx] of [["first", -4], ["final", 4]]) {
    const d = pts.map((p, i) => `${i ? "L" : "M"}${x(i) + dx},${y(p[key])}`).join(" ");
    svg.appendChild(svgEl("path", { class: `series-${key}`, d: d }));
    pts.forEach((p, i) => {
      const [lo, hi] = p[`${key}_ci`];
      svg.appendChild(svgEl("line", { class: `ci-${key}`, x1: x(i) + dx, x2: x(i) + dx, y1: y(lo), y2: y(hi) }));
      const dot = svgEl("circle", { class: `pt-${key}`, cx: x(i) + dx, cy: y(p[key]), r: 3.5 });
      dot.appendChild(svgEl("title", {}, `${p.version} ${key === "first" ? "first try" : "final"}: ${pct(p[key])} ` +
                                         `(95% CI ${pct(lo)}–${pct(hi)}, n=${p.n})`));
      svg.appendChild(dot);
    });
  }
  const legend = [["first", "first try"], ["final", "final (after retry)"]];
  legend.forEach(([key, text], j) => {
    const lx = m.l + 8 + j * 150, ly = H - 10;
    svg.appendChild(svgEl("line", { class: `series-${key}`, x1: lx, x2: lx + 22, y1: ly - 4, y2: ly - 4 }));
    svg.appendChild(svgEl("text", { x: lx + 28, y: ly }, text));
  });
  const box = document.createElement("div");
  box.className = "curve-box";
  const h = document.createElement("h3");
  h.textContent = curve.label;
  const src = document.createElement("span");
  src.className = "muted";
  src.textContent = `  from ${curve.source}`;
  h.appendChild(src);
  box.appendChild(h);
  box.appendChild(svg);
  return box;
}

window.drawCurve = drawCurve;
})();
