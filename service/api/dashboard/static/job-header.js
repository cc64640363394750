// The job page's top: id, status and actions; the failure, if any; the row of stats.

import { h, toast } from "./dom.js";
import { api } from "./api.js";
import { ago, duration, fullDate, timeOfDay } from "./format.js";
import { isTerminal, methodType, runTime } from "./jobs.js";
import { badge, downloadLink, progress } from "./widgets.js";

// onJobChange(job): an action (pause, resume, cancel) answered with the job's new state.
function actionButtons(j, onJobChange) {
  const act = (verb, label, cls = "") => h("button", { class: cls, type: "button", dataset: { action: verb }, onclick: async (ev) => {
    if (verb === "cancel" && !confirm(`Cancel ${j.id}?`)) return;
    ev.target.disabled = true;
    try { onJobChange(await api(`/v1/fine_tuning/jobs/${j.id}/${verb}`, { method: "POST" })); }
    catch (err) { toast(err.message, "error"); ev.target.disabled = false; }
  } }, label);
  const actions = h("div", { class: "job-actions" });
  if (j.status === "running" || j.status === "queued") actions.append(act("pause", "Pause"));
  if (j.status === "paused") actions.append(act("resume", "Resume"));
  if (!isTerminal(j.status)) actions.append(act("cancel", "Cancel", "danger"));
  if (j.status === "succeeded") {
    const link = downloadLink(`/v1/fine_tuning/jobs/${j.id}/adapter`, `${j.id}-adapter.zip`, "Download adapter");
    link.classList.add("button", "primary");
    link.id = "final-adapter";
    actions.append(link);
  }
  return actions;
}

function title(j, actions) {
  return h("div", { class: "page-head" },
    h("div", {},
      h("div", { class: "job-title" }, h("h1", { class: "mono" }, j.id), badge(j.status)),
      h("div", { class: "sub" },
        h("span", {}, h("span", { class: "tag" }, methodType(j)), " on ", h("b", {}, j.model)),
        j.suffix ? h("span", {}, "suffix ", h("span", { class: "mono" }, j.suffix)) : null,
        h("span", { title: fullDate(j.created_at) }, `created ${ago(j.created_at)}`),
        j.fine_tuned_model ? h("span", { class: "mono" }, j.fine_tuned_model) : null)),
    h("div", { class: "spacer" }), actions);
}

function failure(j) {
  if (!j.error) return [];
  return [h("div", { class: "alert error", id: "job-error" },
    h("b", {}, "Job failed: "), j.error.message, " ", h("span", { class: "code" }, `(${j.error.code})`))];
}

function stats(j) {
  const stat = (k, v) => h("div", { class: "stat" }, h("div", { class: "k" }, k), h("div", { class: "v" }, v));
  const finish = j.estimated_finish ? timeOfDay(j.estimated_finish) : j.finished_at ? timeOfDay(j.finished_at) : "–";
  return [
    h("div", { class: "stat wide" }, h("div", { class: "k" }, "Progress"), h("div", { class: "stat-progress" }, progress(j))),
    stat("Steps", `${j.steps_completed || 0}${j.total_steps ? ` / ${j.total_steps}` : ""}`),
    stat("Trained tokens", j.trained_tokens ? j.trained_tokens.toLocaleString() : "–"),
    stat(j.status === "running" ? "Elapsed" : "Duration", duration(runTime(j))),
    stat(j.estimated_finish ? "Estimated finish" : "Finished", finish),
  ];
}

export function createJobHeader({ onJobChange }) {
  const head = h("div");
  const errorBox = h("div");
  const statsRow = h("div", { class: "stats" });
  return {
    nodes: [head, errorBox, h("section", { class: "card" }, statsRow)],
    draw(job) {
      head.replaceChildren(title(job, actionButtons(job, onJobChange)));
      errorBox.replaceChildren(...failure(job));
      statsRow.replaceChildren(...stats(job));
    },
  };
}
