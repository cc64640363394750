// #/jobs[?status=S]: every job of the project with its status and progress, polled.

import { h } from "./dom.js";
import { fetchJobs } from "./api.js";
import { ago, duration, fullDate } from "./format.js";
import { setQuery } from "./hash.js";
import { STATUSES, isTerminal, methodType, runTime } from "./jobs.js";
import { every } from "./lifetime.js";
import { badge, progress } from "./widgets.js";

const FILTERS = ["all", "active", ...STATUSES];
const POLL_MS = 2500;

const matches = (filter, job) =>
  filter === "all" || (filter === "active" ? !isTerminal(job.status) : job.status === filter);

function countByFilter(jobs) {
  const counts = { all: jobs.length, active: 0 };
  for (const j of jobs) {
    counts[j.status] = (counts[j.status] || 0) + 1;
    if (!isTerminal(j.status)) counts.active += 1;
  }
  return counts;
}

function jobRow(j) {
  return h("tr", { dataset: { jobId: j.id, status: j.status }, onclick: () => { location.hash = `#/jobs/${j.id}`; } },
    h("td", {}, h("a", { class: "jobid", href: `#/jobs/${j.id}` }, j.id), j.suffix ? h("span", { class: "muted" }, ` · ${j.suffix}`) : null),
    h("td", {}, badge(j.status)),
    h("td", {}, h("span", { class: "tag" }, methodType(j))),
    h("td", {}, j.model),
    h("td", { title: fullDate(j.created_at) }, ago(j.created_at)),
    h("td", {}, progress(j)),
    h("td", { class: "num muted" }, duration(runTime(j))));
}

export function jobsPage(view, params) {
  document.title = "Jobs · rlhf-service";
  let filter = params.get("status") || "all";
  let jobs = [];
  const chips = h("div", { class: "chips", id: "status-filter" });
  const tbody = h("tbody");
  const note = h("div", { class: "empty", hidden: true });
  view.append(
    h("div", { class: "page-head" }, h("h1", {}, "Fine-tuning jobs"), h("div", { class: "spacer" }),
      h("a", { class: "button primary", href: "#/new" }, "New job")),
    h("div", { class: "card" },
      h("div", { class: "card-head" }, chips),
      h("table", { class: "clickable", id: "jobs-table" },
        h("thead", {}, h("tr", {}, h("th", {}, "Job"), h("th", {}, "Status"), h("th", {}, "Algorithm"),
          h("th", {}, "Model"), h("th", {}, "Created"), h("th", {}, "Progress"), h("th", { class: "num" }, "Duration"))),
        tbody),
      note));

  const pick = (s) => {
    filter = s;
    setQuery("/jobs", new URLSearchParams(s === "all" ? "" : `status=${s}`));
    draw();
  };
  const draw = () => {
    const counts = countByFilter(jobs);
    chips.replaceChildren(...FILTERS.map((s) =>
      h("button", { class: `chip ${filter === s ? "on" : ""}`, dataset: { filter: s }, type: "button", onclick: () => pick(s) },
        s === "all" ? "All" : s[0].toUpperCase() + s.slice(1), h("span", { class: "count" }, counts[s] || 0))));
    const shown = jobs.filter((j) => matches(filter, j));
    tbody.replaceChildren(...shown.map(jobRow));
    note.hidden = shown.length > 0;
    note.textContent = jobs.length ? "No jobs with this status." : "No jobs yet. Start one from \u201cNew job\u201d.";
  };
  every(POLL_MS, async () => { jobs = await fetchJobs(); draw(); });
}
