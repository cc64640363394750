// Step 1 of a new job: upload a JSONL file; the service validates every line and the refusal is
// shown at the lines it names.

import { h } from "./dom.js";
import { api } from "./api.js";
import { card } from "./widgets.js";
import { uploadIssues } from "./upload-issues.js";

// Larger files are not read back into the page just to show a few lines.
const MAX_PREVIEW_BYTES = 20 * 1024 * 1024;
const HELP = "JSONL, one example per line: OpenAI preference format, TRL prompt/chosen/rejected, chat messages, "
  + "prompts or dialogue seeds. The service validates every line on upload.";

// onUploaded(file): the API's file object, once the upload was accepted.
export function createUploadCard({ onUploaded }) {
  const fileInput = h("input", { type: "file", id: "upload-file", accept: ".jsonl,.json,application/jsonl,text/plain" });
  const button = h("button", { type: "button", class: "primary", id: "upload-button" }, "Upload and validate");
  const result = h("div", { id: "upload-result" });

  button.addEventListener("click", async () => {
    const file = fileInput.files[0];
    result.replaceChildren();
    if (!file) { result.append(h("div", { class: "field-error" }, "Choose a file first.")); return; }
    button.disabled = true;
    button.textContent = "Validating…";
    const form = new FormData();
    form.append("purpose", "fine-tune");
    form.append("file", file, file.name);
    try {
      const f = await api("/v1/files", { method: "POST", body: form });
      result.append(h("div", { class: "alert info upload-ok", id: "upload-ok" },
        `Uploaded ${f.filename}: ${f.num_examples} examples, format ${f.format} (${f.id}).`));
      await onUploaded(f);
    } catch (err) {
      if (!err.error) { result.append(h("div", { class: "alert error" }, err.message)); return; }
      const text = file.size <= MAX_PREVIEW_BYTES ? await file.text().catch(() => null) : null;
      result.append(uploadIssues(err.error, text));
    } finally {
      button.disabled = false;
      button.textContent = "Upload and validate";
    }
  });

  return card("1 · Training data", { id: "upload-card" },
    h("p", { class: "muted upload-help" }, HELP),
    h("div", { class: "form-row" }, fileInput, button),
    result);
}
