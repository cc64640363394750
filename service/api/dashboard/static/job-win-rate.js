// The job page's per-turn win rate against the base model: the evaluation REFUEL (and REBEL)
// runs when training ends, as bars with 95% intervals and as a table.

import { h } from "./dom.js";
import { barChart } from "./chart.js";
import { isOnline, isTerminal } from "./jobs.js";
import { card } from "./widgets.js";

const TITLE = "Win rate against the base model";
const pct = (v) => (v === null || v === undefined ? "–" : `${(v * 100).toFixed(1)}%`);

function turnsTable(turns) {
  return h("table", {},
    h("thead", {}, h("tr", {}, h("th", {}, "Turn"), h("th", { class: "num" }, "Win rate"), h("th", { class: "num" }, "95% CI"), h("th", { class: "num" }, "n"))),
    h("tbody", {}, ...turns.map((t) => h("tr", {}, h("td", {}, `h = ${t.turn}`), h("td", { class: "num" }, pct(t.win_rate)),
      h("td", { class: "num muted" }, t.ci95 ? `${pct(t.ci95[0])} – ${pct(t.ci95[1])}` : "–"), h("td", { class: "num muted" }, t.n ?? "–")))));
}

export function createWinRate() {
  const element = h("div", { id: "win-rate" });
  const draw = (j) => {
    const ev = j.result?.evaluation;
    const turns = ev && (ev.turns || ev.per_turn);  // two spellings of the same list
    if (!Array.isArray(turns) || !turns.length) {
      const note = isTerminal(j.status) ? "This job has no win-rate evaluation." : "The per-turn win rate appears here when the job has finished.";
      element.replaceChildren(...(isOnline(j) ? [card(TITLE, {}, h("div", { class: "muted" }, note))] : []));
      return;
    }
    const avg = ev.average_win_rate ?? ev.average;
    const chart = h("div", { id: "win-rate-chart" });
    const hint = h("span", { class: "hint" }, avg !== undefined && avg !== null ? `average ${pct(avg)}` : "",
      ev.judge?.name ? ` · judge ${ev.judge.name}` : "");
    element.replaceChildren(card(TITLE, { extra: hint }, h("div", { class: "win-rate-body" }, chart, turnsTable(turns))));
    barChart(chart, turns.map((t) => ({ label: `turn ${t.turn}`, value: t.win_rate, lo: t.ci95?.[0], hi: t.ci95?.[1] })),
      { yMin: 0, yMax: 1, ref: 0.5, yFormat: (v) => `${Math.round(v * 100)}%` });
  };
  return { element, draw };
}
