// The job page's settings card: the inputs a run was started with, and its method as JSON.

import { h } from "./dom.js";
import { card } from "./widgets.js";

export function createHyperparametersCard() {
  const body = h("div");
  const element = card("Hyperparameters", { id: "hyperparameters-card", bodyClass: null }, body);
  const draw = (j) => {
    const hp = j.hyperparameters;
    const kv = [["seed", j.seed], ["training file", j.training_file], ["validation file", j.validation_file || "–"],
      ["epochs", hp?.n_epochs], ["batch size", hp?.batch_size], ["lr multiplier", hp?.learning_rate_multiplier]];
    if (j.metadata && Object.keys(j.metadata).length) kv.push(["metadata", JSON.stringify(j.metadata)]);
    body.replaceChildren(
      h("dl", { class: "kv" }, ...kv.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v ?? "–"))])),
      h("pre", { class: "json", id: "method-json" }, JSON.stringify(j.method, null, 2)));
  };
  return { element, draw };
}
