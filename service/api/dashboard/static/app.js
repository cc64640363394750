// The rlhf-service dashboard: a single page with hash routes, talking to the /v1 API.
//   #/jobs[?status=S]        jobs list, polled                                   page-jobs.js
//   #/jobs/{id}              one job: curves, live event log (SSE), checkpoints,   page-job.js
//                            hyperparameters, win rate                           (+ job-*.js)
//   #/compare?jobs=a,b&key=k curves of several jobs overlaid                     page-compare.js
//   #/new                    upload a dataset and start a job                    page-new-job.js
// Plain ES modules, no build step: api.js is the API client, sse.js the event stream.
// This module only wires the page's frame (key dialog, connection note) to them.

import { $ } from "./dom.js";
import { apiEvents } from "./api.js";
import { askForKey, setupKeyDialog } from "./key-dialog.js";
import { render } from "./router.js";

apiEvents.addEventListener("unauthorized", (ev) => askForKey(ev.detail.reason));
apiEvents.addEventListener("connection", (ev) => {
  const note = $("#conn");
  note.textContent = ev.detail.ok ? "" : "Service unreachable";
  note.classList.toggle("bad", !ev.detail.ok);
});
setupKeyDialog(render);  // a new key may see other data: draw the view again
window.addEventListener("hashchange", render);
render();
