// #/compare?jobs=a,b&key=k&x=iteration: one metric of several jobs overlaid. The choice lives in
// the address, so a comparison can be linked to.

import { h } from "./dom.js";
import { PALETTE, lineChart } from "./chart.js";
import { fetchJobs, fetchMetrics } from "./api.js";
import { ago } from "./format.js";
import { setQuery } from "./hash.js";
import { isTerminal, methodType } from "./jobs.js";
import { every } from "./lifetime.js";
import { iterations, metricKeys, pointsFor } from "./metrics.js";
import { badge, xModeButtons } from "./widgets.js";

const POLL_MS = 4000;

const searchText = (j) => [j.id, j.model, methodType(j), j.status, j.suffix || ""];
const seriesLabel = (id, j) => (j ? `${id} (${methodType(j)}${j.suffix ? `, ${j.suffix}` : ""})` : id);

function pickerRow(j, checked, onToggle) {
  return h("label", { dataset: { jobId: j.id } },
    h("input", { type: "checkbox", checked, onchange: (ev) => onToggle(ev.target.checked) }),
    h("div", { class: "picker-job" },
      h("div", { class: "jobid", title: j.id }, j.id, j.suffix ? h("span", { class: "muted" }, ` · ${j.suffix}`) : null),
      h("div", { class: "meta" }, badge(j.status), ` ${methodType(j)} · ${j.model} · ${ago(j.created_at)}`)));
}

export function comparePage(view, params) {
  document.title = "Compare · rlhf-service";
  const selected = new Set((params.get("jobs") || "").split(",").filter(Boolean));
  let key = params.get("key") || null;
  let xMode = params.get("x") || "step";
  let jobs = [];
  const cache = new Map(); // job id -> {rows, status}

  const filterInput = h("input", { type: "text", placeholder: "Filter by id, model, method, status…" });
  const picker = h("div", { class: "picker", id: "compare-picker" });
  const keySelect = h("select", { id: "compare-key" });
  const xSeg = h("div", { class: "seg" });
  const chart = h("div", { id: "compare-chart" });
  const info = h("div", { class: "muted compare-info" });
  view.append(
    h("div", { class: "page-head" }, h("h1", {}, "Compare runs")),
    h("div", { class: "compare" },
      h("section", { class: "card" },
        h("div", { class: "card-head" }, h("h2", {}, "Jobs"), h("span", { class: "hint" }, "pick two or more")),
        h("div", { class: "picker-filter" }, filterInput), picker),
      h("section", { class: "card" },
        h("div", { class: "card-head" }, h("h2", {}, "Metric"), keySelect, h("div", { class: "spacer" }), xSeg),
        h("div", { class: "card-body" }, chart, info))));

  const sync = () => {
    const p = new URLSearchParams();
    if (selected.size) p.set("jobs", [...selected].join(","));
    if (key) p.set("key", key);
    if (xMode !== "step") p.set("x", xMode);
    setQuery("/compare", p);
  };
  const drawPicker = () => {
    const q = filterInput.value.trim().toLowerCase();
    const shown = jobs.filter((j) => !q || searchText(j).some((s) => s.toLowerCase().includes(q)));
    picker.replaceChildren(...shown.map((j) => pickerRow(j, selected.has(j.id), (on) => {
      if (on) selected.add(j.id); else selected.delete(j.id);
      sync(); refresh();
    })));
    if (!shown.length) picker.append(h("div", { class: "empty" }, "No jobs."));
  };
  filterInput.addEventListener("input", drawPicker);

  const drawChart = () => {
    const ids = [...selected];
    const rowsOf = (id) => cache.get(id)?.rows || [];
    const keys = [...new Set(ids.flatMap((id) => metricKeys(rowsOf(id))))];
    if (!key || !keys.includes(key)) key = keys.includes("loss") ? "loss" : keys[0] || key;
    keySelect.replaceChildren(...keys.map((k) => h("option", { value: k, selected: k === key }, k)));
    keySelect.disabled = !keys.length;
    const hasIter = ids.some((id) => iterations(rowsOf(id)) > 1);
    xSeg.hidden = !hasIter;
    xSeg.replaceChildren(...xModeButtons(xMode, (m) => { xMode = m; sync(); drawChart(); }));
    const mode = hasIter ? xMode : "step";
    if (!ids.length) { chart.replaceChildren(h("div", { class: "chart-empty" }, "Select jobs on the left to overlay their curves.")); info.textContent = ""; return; }
    const series = ids.map((id, i) => ({
      name: id, label: seriesLabel(id, jobs.find((x) => x.id === id)), color: PALETTE[i % PALETTE.length],
      points: key ? pointsFor(rowsOf(id), key, mode) : [],
    }));
    lineChart(chart, series, { height: 340, xLabel: mode, integerX: true, legend: true, emptyText: key ? `No “${key}” values in these jobs yet` : "No metrics yet" });
    info.textContent = series.map((s) => `${s.name}: ${s.points.length} points`).join(" · ");
    sync();
  };
  keySelect.addEventListener("change", () => { key = keySelect.value; drawChart(); });

  const refresh = async () => {
    await Promise.all([...selected].map(async (id) => {
      const c = cache.get(id);
      const j = jobs.find((x) => x.id === id);
      if (c && j && isTerminal(c.status) && c.status === j.status) return; // finished: cached for good
      try { cache.set(id, { rows: await fetchMetrics(id), status: j?.status }); }
      catch (err) { if (err.status === 404) selected.delete(id); }
    }));
    drawChart();
  };
  every(POLL_MS, async () => {
    jobs = await fetchJobs();
    drawPicker();
    await refresh();
  });
}
