// Which page the hash names, and drawing it into #view after the previous page was left.

import { $ } from "./dom.js";
import { parseHash } from "./hash.js";
import { leavePage } from "./lifetime.js";
import { comparePage } from "./page-compare.js";
import { jobPage } from "./page-job.js";
import { jobsPage } from "./page-jobs.js";
import { newJobPage } from "./page-new-job.js";

// First match wins; `nav` is the top-bar link to highlight. Anything else is the jobs list.
const ROUTES = [
  { match: (path) => path.match(/^\/jobs\/([A-Za-z0-9_-]+)$/), nav: "jobs", show: (view, m) => jobPage(view, m[1]) },
  { match: (path) => path.startsWith("/compare"), nav: "compare", show: (view, _, params) => comparePage(view, params) },
  { match: (path) => path.startsWith("/new"), nav: "new", show: (view) => newJobPage(view) },
  { match: () => true, nav: "jobs", show: (view, _, params) => jobsPage(view, params) },
];

export function render() {
  leavePage();
  const { path, params } = parseHash();
  const view = $("#view");
  view.replaceChildren();
  let found = null, route = null;
  for (route of ROUTES) if ((found = route.match(path))) break;
  route.show(view, found, params);
  document.querySelectorAll("[data-nav]").forEach((a) => a.classList.toggle("active", a.dataset.nav === route.nav));
}
