// What the pages need to know about a fine-tuning job object, in one place.

export const STATUSES = ["running", "queued", "paused", "succeeded", "failed", "cancelled"];
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
// Online methods train in iterations of rollouts, so their curves read best per iteration.
const ONLINE = new Set(["rebel", "refuel"]);

export const isTerminal = (status) => TERMINAL.has(status);
export const methodType = (job) => job?.method?.type || "dpo";
export const isOnline = (job) => ONLINE.has(methodType(job));

// How long the job has run: to its finish, or to now while it is still going (null: unknown).
export function runTime(job) {
  const end = job.finished_at || (isTerminal(job.status) ? null : Date.now() / 1000);
  return end ? end - job.created_at : null;
}
