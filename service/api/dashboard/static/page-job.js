// #/jobs/{id}: one job. Its sections (job-*.js) draw; this module fetches what they show and
// keeps it fresh: the live event stream says when something changed, polling backs it up.

import { h } from "./dom.js";
import { fetchCheckpoints, fetchJob, fetchMetrics, fetchSamples } from "./api.js";
import { isTerminal } from "./jobs.js";
import { debounced, every, onLeave } from "./lifetime.js";
import { followJobEvents } from "./sse.js";
import { createCheckpointsCard } from "./job-checkpoints.js";
import { createEventLog } from "./job-event-log.js";
import { createJobHeader } from "./job-header.js";
import { createHyperparametersCard } from "./job-hyperparameters.js";
import { createMetricsCard } from "./job-metrics.js";
import { createSamples } from "./job-samples.js";
import { createWinRate } from "./job-win-rate.js";

const JOB_POLL_MS = 3000;
const DATA_POLL_MS = 6000;

// Events say what they are about in `kind` (the message is for people and may be reworded).
const isCheckpointEvent = (e) => e.kind === "checkpoint";  // data.step: the step saved
const isSamplesEvent = (e) => e.kind === "samples";  // an evaluation's samples were stored

export function jobPage(view, jobId) {
  document.title = `${jobId} · rlhf-service`;
  const abort = new AbortController();
  onLeave(() => abort.abort());
  const state = { job: null, metrics: [], checkpoints: [], samples: [], finishedSeen: false };

  const header = createJobHeader({ onJobChange: (job) => { state.job = job; header.draw(job); } });
  const metrics = createMetricsCard(jobId);
  const winRate = createWinRate();
  const samples = createSamples();
  const events = createEventLog();
  const checkpoints = createCheckpointsCard(jobId);
  const hyperparameters = createHyperparametersCard();
  view.append(
    h("div", { class: "crumbs" }, h("a", { href: "#/jobs" }, "Jobs"), " / ", h("span", { class: "mono" }, jobId)),
    ...header.nodes,
    metrics.element,
    winRate.element,
    samples.element,
    h("div", { class: "grid2" }, events.element, h("div", {}, checkpoints.element, hyperparameters.element)));

  const refreshMetrics = async () => {
    state.metrics = await fetchMetrics(jobId);
    metrics.draw(state.job, state.metrics);
  };
  const refreshCheckpoints = async () => {
    state.checkpoints = await fetchCheckpoints(jobId);
    checkpoints.draw(state.checkpoints, metrics.selectedKeys());
  };
  const refreshSamples = async () => {
    state.samples = await fetchSamples(jobId);
    samples.draw(state.job, state.samples);
  };
  const refreshJob = async () => {
    const before = state.job;
    state.job = await fetchJob(jobId, { signal: abort.signal });
    header.draw(state.job);
    if (!before) hyperparameters.draw(state.job);  // settings never change
    // The win rate changes only when the job finishes and its evaluation lands.
    if (!before || before.status !== state.job.status || (!before.result && state.job.result)) winRate.draw(state.job);
  };
  // Coalesce refreshes: catching up on a long job's stream delivers thousands of events at once.
  const metricsSoon = debounced(refreshMetrics, 700);
  const checkpointsSoon = debounced(refreshCheckpoints, 500);
  const samplesSoon = debounced(refreshSamples, 500);
  const jobSoon = debounced(refreshJob, 300);

  const poll = () => {
    // The job header every 3 s, until two polls have seen it finished.
    let settledPolls = 0;
    every(JOB_POLL_MS, async () => {
      if (settledPolls > 1) return;
      await refreshJob();
      if (isTerminal(state.job.status)) settledPolls += 1;
    });
    // Metrics, checkpoints and samples every 6 s while it runs, and once more after it finished.
    every(DATA_POLL_MS, async () => {
      if (isTerminal(state.job.status) && state.finishedSeen) return;
      if (isTerminal(state.job.status)) state.finishedSeen = true;
      await Promise.all([refreshMetrics(), refreshCheckpoints(), refreshSamples()]);
    });
  };

  const follow = () => followJobEvents(jobId, {
    signal: abort.signal,
    isFinished: async () => { await refreshJob(); return isTerminal(state.job.status); },
    onState: events.showStreamState,
    onEvent: (e) => {
      events.append(e);
      if (e.type === "metrics") metricsSoon();
      if (isCheckpointEvent(e)) checkpointsSoon();
      if (isSamplesEvent(e)) samplesSoon();
      if (e.type !== "metrics") jobSoon();
    },
  });

  (async () => {
    try {
      await refreshJob();
    } catch (err) {
      if (err.name === "AbortError") return;
      view.replaceChildren(h("div", { class: "alert error" }, err.status === 404 ? `No such job: ${jobId}` : err.message));
      return;
    }
    await Promise.allSettled([refreshMetrics(), refreshCheckpoints(), refreshSamples()]);
    poll();
    follow();
  })();
}
