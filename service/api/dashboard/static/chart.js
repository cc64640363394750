// Small hand-drawn SVG charts: line charts (with hover read-out) and bars with error whiskers.
// Each line series becomes one <path class="series" data-series=NAME data-points=N>, so the
// number of drawn points is visible in the DOM.

const SVG = "http://www.w3.org/2000/svg";
export const PALETTE = ["#2f6feb", "#e5534b", "#2da44e", "#bf8700", "#8250df", "#1b7c83", "#d9480f", "#57606a"];

function el(tag, attrs = {}, parent = null) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}

// An HTML element holding nodes and text (text is never parsed: labels are job ids and keys).
function htmlNode(tag, ...children) {
  const node = document.createElement(tag);
  node.append(...children);
  return node;
}

// A series' colour mark. The colour is data, so it is set through the CSSOM (allowed under a
// strict style-src CSP), not written into a style attribute.
function swatch(color) {
  const sw = htmlNode("span");
  sw.className = "sw";
  sw.style.background = color;
  return sw;
}

export function fmtNum(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  const a = Math.abs(v);
  if (a === 0) return "0";
  if (a >= 1e5 || a < 1e-3) return v.toExponential(2);
  if (Number.isInteger(v)) return String(v);
  if (a >= 100) return v.toFixed(a >= 1000 ? 0 : 1);
  return String(Number(v.toPrecision(4)));
}

// "Nice" ticks (1, 2, 5 x 10^k) covering [lo, hi].
function ticks(lo, hi, count) {
  const span = hi - lo;
  const raw = span / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => span / s <= count) || 10 * mag;
  const out = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(Number(t.toPrecision(12)));
  return out;
}

function domain(values, pad) {
  let lo = Math.min(...values), hi = Math.max(...values);
  if (!Number.isFinite(lo)) return [0, 1];
  if (lo === hi) {
    const d = Math.abs(lo) * 0.1 || 1;
    return [lo - d, hi + d];
  }
  const p = (hi - lo) * pad;
  return [lo - p, hi + p];
}

const charts = new Map();  // container -> redraw, for window resizes
let resizeTimer = null;
window.addEventListener("resize", () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => {
    for (const [node, draw] of [...charts]) {
      if (!node.isConnected) charts.delete(node);
      else draw();
    }
  }, 120);
});

/**
 * series: [{name, label?, color?, points: [[x, y], ...]}] (y may be null: a gap)
 * opts: {height, xLabel, yFormat, integerX}
 */
export function lineChart(container, series, opts = {}) {
  const draw = () => drawLine(container, series, opts);
  charts.set(container, draw);
  draw();
}

function drawLine(container, series, opts) {
  container.classList.add("chart");
  container.replaceChildren();
  const all = series.flatMap((s) => s.points.filter((p) => p[1] !== null && Number.isFinite(p[1])));
  if (!all.length) {
    const empty = document.createElement("div");
    empty.className = "chart-empty";
    empty.textContent = opts.emptyText || "No data yet";
    container.appendChild(empty);
    return;
  }
  const W = Math.max(240, container.clientWidth || 480);
  const H = opts.height || 190;
  const m = { l: 50, r: 12, t: 8, b: opts.xLabel ? 34 : 22 };
  const [x0, x1] = domain(all.map((p) => p[0]), 0);
  const [y0, y1] = domain(all.map((p) => p[1]), 0.06);
  const sx = (x) => m.l + ((x - x0) / (x1 - x0)) * (W - m.l - m.r);
  const sy = (y) => m.t + (1 - (y - y0) / (y1 - y0)) * (H - m.t - m.b);
  const fmtY = opts.yFormat || fmtNum;

  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, height: H, role: "img" });
  const grid = el("g", { class: "grid" }, svg);
  const axis = el("g", { class: "axis" }, svg);
  for (const t of ticks(y0, y1, Math.max(3, Math.round((H - m.t - m.b) / 30)))) {
    el("line", { x1: m.l, x2: W - m.r, y1: sy(t), y2: sy(t) }, grid);
    el("text", { x: m.l - 6, y: sy(t) + 3.5, "text-anchor": "end" }, axis).textContent = fmtY(t);
  }
  let xt = ticks(x0, x1, Math.max(2, Math.round((W - m.l - m.r) / 70)));
  if (opts.integerX) xt = xt.filter((t) => Number.isInteger(t));
  for (const t of xt) {
    el("text", { x: sx(t), y: H - m.b + 14, "text-anchor": "middle" }, axis).textContent = fmtNum(t);
  }
  el("line", { class: "axis-line", x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b }, svg);
  if (opts.xLabel) {
    el("text", { x: W - m.r, y: H - 4, "text-anchor": "end" }, axis).textContent = opts.xLabel;
  }

  series.forEach((s, i) => {
    const color = s.color || PALETTE[i % PALETTE.length];
    const pts = s.points.filter((p) => p[1] !== null && Number.isFinite(p[1]));
    let d = "", pen = false;
    for (const [x, y] of s.points) {
      if (y === null || !Number.isFinite(y)) { pen = false; continue; }
      d += `${pen ? "L" : "M"}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`;
      pen = true;
    }
    el("path", { class: "series", d, stroke: color, "data-series": s.name, "data-points": pts.length }, svg);
    if (pts.length <= 40) {  // few points: mark them
      for (const [x, y] of pts) el("circle", { cx: sx(x), cy: sy(y), r: pts.length === 1 ? 3.5 : 2.2, fill: color }, svg);
    }
  });

  // Hover read-out: nearest x, every series' value there.
  const cursor = el("line", { class: "cursor", y1: m.t, y2: H - m.b, visibility: "hidden" }, svg);
  const hit = el("rect", { x: m.l, y: m.t, width: W - m.l - m.r, height: H - m.t - m.b, fill: "transparent" }, svg);
  const tip = document.createElement("div");
  tip.className = "tip";
  tip.hidden = true;
  const xs = [...new Set(all.map((p) => p[0]))].sort((a, b) => a - b);
  hit.addEventListener("mousemove", (ev) => {
    const box = svg.getBoundingClientRect();
    const px = ((ev.clientX - box.left) / box.width) * W;
    const xv = x0 + ((px - m.l) / (W - m.l - m.r)) * (x1 - x0);
    let best = xs[0];
    for (const x of xs) if (Math.abs(x - xv) < Math.abs(best - xv)) best = x;
    cursor.setAttribute("x1", sx(best));
    cursor.setAttribute("x2", sx(best));
    cursor.setAttribute("visibility", "visible");
    const rows = series.flatMap((s, i) => {
      const p = s.points.find((q) => q[0] === best);
      if (!p || p[1] === null) return [];
      const value = document.createElement("b");
      value.textContent = fmtY(p[1]);
      return [htmlNode("div", swatch(s.color || PALETTE[i % PALETTE.length]), `${s.label || s.name}: `, value)];
    });
    tip.replaceChildren(htmlNode("div", `${opts.xLabel || "x"} ${fmtNum(best)}`), ...rows);
    tip.hidden = false;
    const left = (sx(best) / W) * box.width;
    tip.style.left = `${left + 12 + 180 > box.width ? left - 12 - tip.offsetWidth : left + 12}px`;
    tip.style.top = `${m.t}px`;
  });
  hit.addEventListener("mouseleave", () => { tip.hidden = true; cursor.setAttribute("visibility", "hidden"); });
  container.append(svg, tip);

  if (series.length > 1 || opts.legend) {
    const legend = document.createElement("div");
    legend.className = "legend";
    series.forEach((s, i) => {
      legend.appendChild(htmlNode("span", swatch(s.color || PALETTE[i % PALETTE.length]), s.label || s.name));
    });
    container.appendChild(legend);
  }
}

/**
 * Vertical bars with optional [lo, hi] whiskers, e.g. the win rate per turn with its 95% CI.
 * bars: [{label, value, lo?, hi?}]; opts: {yMin, yMax, ref (a dashed reference line), yFormat}
 */
export function barChart(container, bars, opts = {}) {
  container.classList.add("chart");
  container.replaceChildren();
  const W = Math.max(240, container.clientWidth || 480);
  const H = opts.height || 200;
  const m = { l: 44, r: 10, t: 10, b: 34 };
  const y0 = opts.yMin ?? 0, y1 = opts.yMax ?? Math.max(...bars.map((b) => b.hi ?? b.value)) * 1.1;
  const fmtY = opts.yFormat || fmtNum;
  const sy = (y) => m.t + (1 - (Math.min(Math.max(y, y0), y1) - y0) / (y1 - y0)) * (H - m.t - m.b);
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, height: H, role: "img" });
  const grid = el("g", { class: "grid" }, svg);
  const axis = el("g", { class: "axis" }, svg);
  for (const t of ticks(y0, y1, 4)) {
    el("line", { x1: m.l, x2: W - m.r, y1: sy(t), y2: sy(t) }, grid);
    el("text", { x: m.l - 6, y: sy(t) + 3.5, "text-anchor": "end" }, axis).textContent = fmtY(t);
  }
  const band = (W - m.l - m.r) / Math.max(1, bars.length);
  const bw = Math.min(56, band * 0.6);
  bars.forEach((b, i) => {
    const cx = m.l + band * (i + 0.5);
    const g = el("g", { class: "bar", "data-label": b.label, "data-value": b.value }, svg);
    el("rect", { x: cx - bw / 2, y: sy(b.value), width: bw, height: Math.max(0, sy(y0) - sy(b.value)), rx: 3,
                 fill: opts.color || PALETTE[0], opacity: 0.85 }, g);
    if (b.lo !== undefined && b.hi !== undefined && b.lo !== null && b.hi !== null) {
      const c = "#24292f";
      el("line", { x1: cx, x2: cx, y1: sy(b.lo), y2: sy(b.hi), stroke: c, "stroke-width": 1.3 }, g);
      el("line", { x1: cx - 6, x2: cx + 6, y1: sy(b.lo), y2: sy(b.lo), stroke: c, "stroke-width": 1.3 }, g);
      el("line", { x1: cx - 6, x2: cx + 6, y1: sy(b.hi), y2: sy(b.hi), stroke: c, "stroke-width": 1.3 }, g);
    }
    el("text", { x: cx, y: H - m.b + 14, "text-anchor": "middle" }, axis).textContent = b.label;
    el("text", { x: cx, y: sy(b.hi ?? b.value) - 5, "text-anchor": "middle", class: "bar-value" }, axis).textContent = fmtY(b.value);
    const title = el("title", {}, g);
    title.textContent = `${b.label}: ${fmtY(b.value)}` + (b.lo !== undefined && b.lo !== null ? ` (95% CI ${fmtY(b.lo)} – ${fmtY(b.hi)})` : "");
  });
  if (opts.ref !== undefined) {
    el("line", { x1: m.l, x2: W - m.r, y1: sy(opts.ref), y2: sy(opts.ref), stroke: "#cf222e", "stroke-dasharray": "4 3", "stroke-width": 1 }, svg);
  }
  el("line", { class: "axis-line", x1: m.l, x2: W - m.r, y1: sy(y0), y2: sy(y0) }, svg);
  if (opts.xLabel) el("text", { x: W - m.r, y: H - 4, "text-anchor": "end" }, axis).textContent = opts.xLabel;
  container.appendChild(svg);
}
