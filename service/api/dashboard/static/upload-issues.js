// A refused upload shown at its lines: the file's lines around each issue the API names, the bad
// line marked and its message under it; issues without a line (or a file we could not read) below.

import { h } from "./dom.js";

const MAX_LINE_CHARS = 400;

const issueMessage = (i, prefix) => h("div", { class: "issue-msg line-error", dataset: { line: i.line || "", field: i.field || "" } },
  ...prefix, i.message, h("span", { class: "code" }, i.code || ""));

// error: the API's error envelope; text: the uploaded file read locally, or null.
export function uploadIssues(error, text) {
  const issues = error.issues && error.issues.length ? error.issues : [{ line: null, field: error.param, code: error.code, message: error.message }];
  const lines = text === null ? null : text.split(/\r?\n/);
  const box = h("div", { class: "issues", id: "upload-issues" }, h("div", { class: "issues-head" }, error.message));
  const general = issues.filter((i) => !i.line || !lines);
  const byLine = new Map();
  for (const i of issues) if (i.line && lines) (byLine.get(i.line) || byLine.set(i.line, []).get(i.line)).push(i);

  // Each bad line with one line of context either side; "⋮" where lines are skipped.
  const src = h("div", { class: "src" });
  const badLines = [...byLine.keys()].sort((a, b) => a - b);
  const shown = new Set(badLines.flatMap((n) => [n - 1, n, n + 1]).filter((n) => n >= 1 && n <= lines.length));
  let prev = 0;
  for (const n of [...shown].sort((a, b) => a - b)) {
    if (prev && n > prev + 1) src.append(h("div", { class: "gap" }, "⋮"));
    prev = n;
    const bad = byLine.get(n);
    src.append(h("div", { class: `ln${bad ? " bad" : ""}`, dataset: { line: n } }, h("span", { class: "no" }, n),
      h("code", {}, (lines[n - 1] ?? "").slice(0, MAX_LINE_CHARS))));
    for (const i of bad || []) src.append(issueMessage({ ...i, line: n }, [h("b", {}, `Line ${n}`), i.field ? ` · ${i.field}` : "", ": "]));
  }
  if (badLines.length) box.append(src);
  for (const i of general) {
    box.append(h("div", { class: "src" }, issueMessage(i, [i.line ? h("b", {}, `Line ${i.line}: `) : null, i.field ? `${i.field}: ` : ""])));
  }
  return box;
}
