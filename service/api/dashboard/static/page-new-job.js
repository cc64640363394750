// #/new: upload a dataset, then start a job on it.

import { h } from "./dom.js";
import { createJobForm } from "./new-job-form.js";
import { createUploadCard } from "./new-job-upload.js";

export function newJobPage(view) {
  document.title = "New job · rlhf-service";
  const form = createJobForm();
  const upload = createUploadCard({ onUploaded: (file) => form.loadFiles(file.id) });
  view.append(h("div", { class: "page-head" }, h("h1", {}, "New fine-tuning job")), upload, form.element);
  // The lists fill in when they arrive; a failure (e.g. no key yet) leaves them empty.
  form.loadFiles().catch(() => {});
  form.loadModels().catch(() => {});
}
