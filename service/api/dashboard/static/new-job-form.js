// Step 2 of a new job: files, model, method and hyperparameters; a refusal marks the field the
// API names in `param`.

import { h } from "./dom.js";
import { api, fetchFiles, fetchModels } from "./api.js";
import { card } from "./widgets.js";

// What the hyperparameters box starts with for each method: the usual knobs, to be edited.
const HP_DEFAULTS = {
  dpo: { n_epochs: 1, batch_size: 4, learning_rate_multiplier: "auto", beta: 0.1, loss_type: "sigmoid" },
  supervised: { n_epochs: 1, batch_size: 4, learning_rate_multiplier: "auto" },
  reward_model: { n_epochs: 1, batch_size: 4 },
  rebel: { iterations: 2, rollouts_per_iteration: 8, eta: 1.0, max_new_tokens: 64, reward: { type: "function", name: "length_penalty" } },
  refuel: { iterations: 2, rollouts_per_iteration: 8, num_turns: 3, eta: 1.0, max_new_tokens: 64, reward: { type: "function", name: "length_penalty" } },
};

const field = (label, control, ...more) => h("label", { class: "field" }, label, control, ...more);

export function createJobForm() {
  const trainSelect = h("select", { id: "training-file", class: "training-file" });
  const validSelect = h("select", { id: "validation-file", class: "validation-file" });
  const modelSelect = h("select", { id: "model", class: "model" });
  const methodSelect = h("select", { id: "method-type" }, ...Object.keys(HP_DEFAULTS).map((t) => h("option", { value: t }, t)));
  const hpText = h("textarea", { id: "hyperparameters", spellcheck: "false" });
  const hpError = h("div", { class: "field-error", id: "hyperparameters-error" });
  const seedInput = h("input", { type: "number", id: "seed", class: "seed", placeholder: "random", min: 0 });
  const suffixInput = h("input", { type: "text", id: "suffix", class: "suffix", placeholder: "optional" });
  const createBtn = h("button", { type: "submit", class: "primary", id: "create-button" }, "Start job");
  const createResult = h("div", { id: "create-result" });
  // The API's `param` of a refusal -> the control to mark.
  const controls = { model: modelSelect, training_file: trainSelect, validation_file: validSelect, seed: seedInput, suffix: suffixInput };

  // A new method replaces the defaults, unless the user has edited them since.
  let hpTouched = false;
  const setDefaults = () => { if (!hpTouched) hpText.value = JSON.stringify(HP_DEFAULTS[methodSelect.value], null, 2); };
  methodSelect.addEventListener("change", () => { hpTouched = false; setDefaults(); });
  hpText.addEventListener("input", () => { hpTouched = true; });
  setDefaults();

  const showRefusal = (err) => {
    const param = err.error?.param || "";
    const target = controls[param.split(".")[0]];
    if (param.startsWith("method")) { hpText.classList.add("invalid"); hpError.textContent = `${param}: ${err.message}`; }
    else if (target) target.classList.add("invalid");
    createResult.append(h("div", { class: "alert error form-error", id: "create-error" }, err.message,
      param ? h("span", { class: "code" }, ` (${param})`) : null));
  };

  const create = async () => {
    createResult.replaceChildren();
    hpError.textContent = "";
    hpText.classList.remove("invalid");
    let hp;
    try { hp = JSON.parse(hpText.value || "{}"); }
    catch (err) { hpError.textContent = `Not valid JSON: ${err.message}`; hpText.classList.add("invalid"); return; }
    const type = methodSelect.value;
    const body = { model: modelSelect.value, training_file: trainSelect.value, method: { type, [type]: { hyperparameters: hp } } };
    if (validSelect.value) body.validation_file = validSelect.value;
    if (seedInput.value !== "") body.seed = Number(seedInput.value);
    if (suffixInput.value.trim()) body.suffix = suffixInput.value.trim();
    createBtn.disabled = true;
    try {
      const job = await api("/v1/fine_tuning/jobs", { method: "POST", json: body });
      location.hash = `#/jobs/${job.id}`;
    } catch (err) {
      showRefusal(err);
    } finally {
      createBtn.disabled = false;
    }
  };

  // selectId: the file to select, e.g. the one just uploaded.
  const loadFiles = async (selectId) => {
    const files = await fetchFiles();
    const opt = (f) => h("option", { value: f.id, selected: f.id === selectId }, `${f.filename} · ${f.format} · ${f.num_examples} examples · ${f.id}`);
    trainSelect.replaceChildren(...(files.length ? files.map(opt) : [h("option", { value: "" }, "Upload a file first")]));
    validSelect.replaceChildren(h("option", { value: "" }, "none"), ...files.map((f) => h("option", { value: f.id }, `${f.filename} · ${f.id}`)));
  };
  // Reward models score; they are not a base to fine-tune.
  const loadModels = async () => {
    const models = (await fetchModels()).filter((m) => m.kind !== "reward_model");
    modelSelect.replaceChildren(...models.map((m) => h("option", { value: m.id, title: m.description || "" }, m.id)));
  };

  const element = h("form", { id: "create-form", onsubmit: (ev) => { ev.preventDefault(); create(); } },
    card("2 · Model and method", { id: "create-card" },
      h("div", { class: "form-row" }, field("Training file", trainSelect), field("Validation file", validSelect)),
      h("div", { class: "form-row" },
        field("Base model", modelSelect), field("Algorithm", methodSelect), field("Seed", seedInput), field("Suffix", suffixInput)),
      h("label", { class: "field hyperparameters" }, "Hyperparameters (JSON; omitted keys take their defaults)", hpText, hpError),
      h("div", { class: "form-actions" }, createBtn),
      createResult));
  return { element, loadFiles, loadModels };
}
