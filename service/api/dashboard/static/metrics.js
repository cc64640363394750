// Reading the metrics endpoint's rows ({step, values: {key: number}}) into chartable series.

import { fmtNum } from "./chart.js";

// The curves a job page opens with, per method, until the user picks others.
export const DEFAULT_KEYS = {
  dpo: ["loss", "rewards/margins", "rewards/accuracies", "eval/loss"],
  supervised: ["loss", "eval/loss"],
  reward_model: ["loss", "accuracy", "eval/loss"],
  rebel: ["rollout/reward_mean", "rollout/reward_gap", "regression_loss", "rollout/kl_to_base"],
  refuel: ["rollout/reward_mean", "rollout/reward_gap", "regression_loss", "rollout/kl_to_base"],
};
// Bookkeeping the online methods log with each step: positions, not curves.
const HIDDEN_KEYS = new Set(["iteration", "step_offset"]);

// Every numeric key in the rows, training keys first, then eval/ ones, each group sorted.
export function metricKeys(rows) {
  const keys = new Set();
  for (const r of rows) {
    for (const [k, v] of Object.entries(r.values || {})) {
      if (!HIDDEN_KEYS.has(k) && (typeof v === "number" || v === null)) keys.add(k);
    }
  }
  return [...keys].sort((a, b) => (a.startsWith("eval/") - b.startsWith("eval/")) || a.localeCompare(b));
}

// [[x, y], ...] for one key; x is the step, or the iteration (last value logged in each).
export function pointsFor(rows, key, xMode = "step") {
  const pts = rows.filter((r) => key in (r.values || {}))
    .map((r) => [xMode === "iteration" ? r.values.iteration : r.step, r.values[key]]);
  if (xMode !== "iteration") return pts;
  const last = new Map();
  for (const p of pts) if (p[0] !== undefined && p[0] !== null) last.set(p[0], p);
  return [...last.values()].sort((a, b) => a[0] - b[0]);
}

// How many distinct iterations the rows span (REBEL/REFUEL log one per step).
export const iterations = (rows) =>
  new Set(rows.map((r) => r.values?.iteration).filter((v) => v !== undefined && v !== null)).size;

// Accuracies read as percentages; everything else as a number.
export function metricFormat(key) {
  if (!key.includes("accurac")) return fmtNum;
  return (v) => (typeof v === "number" ? `${Math.round(v * 100)}%` : fmtNum(v));
}
