// The job page's checkpoints: one row per saved step, a few of its metrics, its adapter's link.

import { h } from "./dom.js";
import { fullDate } from "./format.js";
import { metricFormat } from "./metrics.js";
import { card, downloadLink } from "./widgets.js";

// The charted keys first, then the usual headline metrics; three columns fit the card.
const HEADLINE_KEYS = ["loss", "rewards/margins", "rewards/accuracies", "regression_loss"];
const MAX_COLUMNS = 3;

function columns(rows, preferredKeys) {
  const available = new Set(rows.flatMap((c) => Object.keys(c.metrics || {})));
  return [...new Set([...preferredKeys, ...HEADLINE_KEYS])]
    .filter((k) => available.has(k) && k !== "step").slice(0, MAX_COLUMNS);
}

export function createCheckpointsCard(jobId) {
  const body = h("div");
  const element = card("Checkpoints", { id: "checkpoints-card", bodyClass: null }, body);
  const adapterLink = (c) => downloadLink(`/v1/fine_tuning/jobs/${jobId}/checkpoints/${c.id}/adapter`,
    `${jobId}-step-${c.step_number}-adapter.zip`, "download");

  // preferredKeys: the metrics the user charts, shown first.
  const draw = (checkpoints, preferredKeys) => {
    const rows = [...checkpoints].sort((a, b) => a.step_number - b.step_number);
    if (!rows.length) { body.replaceChildren(h("div", { class: "empty" }, "No checkpoints yet.")); return; }
    const cols = columns(rows, preferredKeys);
    const short = (k) => k.split("/").pop();
    body.replaceChildren(h("table", { id: "checkpoints", class: "compact" },
      h("thead", {}, h("tr", {}, h("th", {}, "Step"), ...cols.map((k) => h("th", { class: "num", title: k }, short(k))),
        h("th", { class: "num" }, "Adapter"))),
      h("tbody", {}, ...rows.map((c) => h("tr", { dataset: { step: c.step_number }, title: `saved ${fullDate(c.created_at)}` },
        h("td", { class: "mono" }, c.step_number),
        ...cols.map((k) => h("td", { class: "num" }, metricFormat(k)(c.metrics?.[k]))),
        h("td", { class: "num" }, adapterLink(c)))))));
  };
  return { element, draw };
}
