// Small pieces several pages draw: status badges, progress bars, cards, toggles, download links.

import { h, toast } from "./dom.js";
import { api, storedKey } from "./api.js";

export function badge(status) {
  return h("span", { class: `badge ${status}`, dataset: { status } }, status.replace("_", " "));
}

export function progress(job) {
  const done = job.steps_completed || 0, total = job.total_steps;
  const pct = total ? Math.min(100, (100 * done) / total) : job.status === "succeeded" ? 100 : 0;
  const fill = h("span");
  // The one computed length on the page: set through the CSSOM, which a strict style-src CSP
  // allows, rather than as a style attribute, which it would not.
  fill.style.width = `${pct}%`;
  return h("div", { class: `progress ${job.status}`, dataset: { steps: done, total: total ?? "" } },
    h("div", { class: "bar" }, fill),
    h("span", { class: "label" }, total ? `${done}/${total}` : done ? `${done}` : "–"));
}

// A titled card. extra: nodes at the right of the head; bodyClass null: the body is not padded.
export function card(title, { id, extra, bodyClass = "card-body" } = {}, ...body) {
  return h("section", { class: "card", id },
    h("div", { class: "card-head" }, h("h2", {}, title), extra ? h("div", { class: "spacer" }) : null, extra),
    bodyClass === null ? body : h("div", { class: bodyClass }, body));
}

// The "per step | per iteration" switch of the metric charts.
export function xModeButtons(current, onPick) {
  return ["step", "iteration"].map((m) => h("button", {
    type: "button", class: current === m ? "on" : "", onclick: () => onPick(m) }, `per ${m}`));
}

// Downloads must carry the key too, so with a key they go through fetch() and a blob URL.
async function download(url, filename) {
  try {
    const res = await api(url, { raw: true });
    const blob = await res.blob();
    const a = h("a", { href: URL.createObjectURL(blob), download: filename });
    document.body.appendChild(a);
    a.click();
    setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  } catch (err) {
    toast(err.message, "error");
  }
}

export function downloadLink(url, filename, text) {
  return h("a", {
    href: url, download: filename, class: "download-link",
    onclick: (ev) => {
      if (!storedKey()) return; // open mode: a plain link works
      ev.preventDefault();
      download(url, filename);
    },
  }, text);
}
