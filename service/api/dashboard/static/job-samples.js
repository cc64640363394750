// The job page's samples: what the model says to a few held-out prompts at each evaluation, next
// to what the model it started from said (step 0). One step is shown against the base at a time,
// the latest by default; the buttons pick any other.

import { h } from "./dom.js";
import { methodType } from "./jobs.js";
import { card } from "./widgets.js";

const TITLE = "Samples";
const NO_SAMPLES = new Set(["reward_model"]);  // a reward model scores replies, it writes none

// A job without samples: a reward model, or one created with eval_samples 0.
const samplesOff = (job) => NO_SAMPLES.has(methodType(job))
  || job.method?.[methodType(job)]?.hyperparameters?.eval_samples === 0;

function messages(list) {
  return list.map((m) => h("div", { class: `sample-msg ${m.role}` },
    h("span", { class: "sample-role" }, m.role), h("div", { class: "sample-text" }, m.content)));
}

// A reply: the dialogue after the prompt (online methods), else the one completion.
function reply(sample, label) {
  const body = sample
    ? (sample.dialogue ? messages(sample.dialogue) : h("div", { class: "sample-text" }, sample.completion))
    : h("div", { class: "muted" }, "–");
  return h("div", { class: "sample-reply", dataset: { step: sample ? sample.step : "" } },
    h("div", { class: "sample-label" }, label), body);
}

// {steps: [evaluated steps, ascending, without 0], prompts: [{index, prompt, byStep: {step: sample}}]}
function group(samples) {
  const prompts = new Map(), steps = new Set();
  for (const s of samples) {
    if (!prompts.has(s.index)) prompts.set(s.index, { index: s.index, prompt: s.prompt, byStep: {} });
    prompts.get(s.index).byStep[s.step] = s;
    if (s.step !== 0) steps.add(s.step);
  }
  return { steps: [...steps].sort((a, b) => a - b), prompts: [...prompts.values()].sort((a, b) => a.index - b.index) };
}

export function createSamples() {
  const element = h("div", { id: "samples" });
  let picked = null;  // the step the user chose; null: the latest
  let last = { job: null, samples: [] };

  const draw = (job, samples) => {
    last = { job, samples };
    if (!samples.length) {
      const note = samplesOff(job) ? null : "The base model's replies appear here when training starts, then each evaluation's.";
      element.replaceChildren(...(note ? [card(TITLE, { id: "samples-card" }, h("div", { class: "muted" }, note))] : []));
      return;
    }
    const { steps, prompts } = group(samples);
    const shown = steps.includes(picked) ? picked : steps[steps.length - 1];
    const pick = (step) => { picked = step; draw(last.job, last.samples); };
    const buttons = h("div", { class: "seg", id: "sample-steps" }, ...steps.map((s) => h("button", {
      type: "button", class: s === shown ? "on" : "", dataset: { step: s }, onclick: () => pick(s) }, `step ${s}`)));
    const body = prompts.map((p) => h("div", { class: "sample", dataset: { index: p.index } },
      h("div", { class: "sample-prompt" }, messages(p.prompt)),
      h("div", { class: "sample-pair" }, reply(p.byStep[0], "base (step 0)"),
        shown === undefined ? h("div", { class: "sample-reply muted" }, "No evaluation yet.") : reply(p.byStep[shown], `step ${shown}`))));
    element.replaceChildren(card(TITLE, { id: "samples-card", extra: buttons }, ...body));
  };
  return { element, draw };
}
