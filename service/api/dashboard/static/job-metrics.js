// The job page's metric charts: one chart per chosen key, keys chosen with chips (remembered per
// method in localStorage), and per step or per iteration for the online methods.

import { h } from "./dom.js";
import { lineChart } from "./chart.js";
import { isOnline, methodType } from "./jobs.js";
import { DEFAULT_KEYS, iterations, metricFormat, metricKeys, pointsFor } from "./metrics.js";
import { card, xModeButtons } from "./widgets.js";

const storeKey = (job) => `rlhf.keys.${methodType(job)}`;

// The keys to open with: the user's last choice for this method, else the method's defaults,
// else the first three logged; null while nothing is logged, so the choice is made once it is.
function initialKeys(job, all) {
  if (!all.length) return null;
  const saved = JSON.parse(localStorage.getItem(storeKey(job)) || "null");
  const keys = (saved || DEFAULT_KEYS[methodType(job)] || ["loss"]).filter((k) => all.includes(k));
  return keys.length ? keys : all.slice(0, 3);
}

export function createMetricsCard(jobId) {
  let keys = null, xMode = null, job = null, rows = [];
  const keyChips = h("div", { class: "chips", id: "metric-keys" });
  const xSeg = h("div", { class: "seg", id: "x-mode", hidden: true });
  const chartsBox = h("div", { class: "charts", id: "charts" });
  const element = card("Metrics", { id: "metrics-card", extra: h("div", { class: "card-tools" },
    xSeg, h("a", { href: `#/compare?jobs=${jobId}`, class: "button" }, "Compare…")) },
  h("div", { class: "metric-picker" }, keyChips), chartsBox);

  const toggle = (k) => {
    const selected = keys || [];
    keys = selected.includes(k) ? selected.filter((x) => x !== k) : [...selected, k];
    localStorage.setItem(storeKey(job), JSON.stringify(keys));
    redraw();
  };
  const drawChips = (all, selected) => {
    keyChips.replaceChildren(...(all.length
      ? all.map((k) => h("button", { type: "button", class: `chip ${selected.includes(k) ? "on" : ""}`, dataset: { key: k },
        onclick: () => toggle(k) }, k))
      : [h("span", { class: "muted" }, "Metrics appear here once the first step is logged.")]));
  };
  const drawCharts = (selected) => {
    const boxes = selected.map((k) => ({ key: k, chart: h("div", { dataset: { key: k } }) }));
    chartsBox.replaceChildren(...boxes.map(({ key, chart }) =>
      h("div", { class: "chart-box" }, h("div", { class: "chart-title" }, key), chart)));
    for (const { key, chart } of boxes) {
      lineChart(chart, [{ name: key, points: pointsFor(rows, key, xMode) }],
        { xLabel: xMode, integerX: true, yFormat: metricFormat(key) });
    }
  };
  const redraw = () => {
    const all = metricKeys(rows);
    if (!keys) keys = initialKeys(job, all);
    const hasIter = iterations(rows) > 1;
    if (!xMode) xMode = hasIter && isOnline(job) ? "iteration" : "step";
    xSeg.hidden = !hasIter;
    xSeg.replaceChildren(...xModeButtons(xMode, (m) => { xMode = m; redraw(); }));
    const selected = keys || [];
    drawChips(all, selected);
    drawCharts(selected);
  };

  return {
    element,
    selectedKeys: () => keys || [],
    draw(newJob, newRows) { job = newJob; rows = newRows; redraw(); },
  };
}
