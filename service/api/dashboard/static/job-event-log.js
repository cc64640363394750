// The job page's event log: events as the stream delivers them, the stream's state beside them.

import { h } from "./dom.js";
import { clock, fullDate } from "./format.js";
import { card } from "./widgets.js";

// A long job's log would grow without end; the oldest lines go first.
const MAX_LINES = 3000;
const STATE_LABELS = { live: "live", retrying: "reconnecting…", ended: "job finished", stopped: "stopped" };

export function createEventLog() {
  let lines = 0;
  const log = h("div", { class: "log", id: "event-log", dataset: { count: 0 } }, h("div", { class: "log-empty" }, "Connecting…"));
  const live = h("span", { class: "live-dot", id: "stream-state" }, "connecting");
  const showMetrics = h("input", { type: "checkbox", checked: true,
    onchange: () => log.classList.toggle("hide-metrics", !showMetrics.checked) });
  const tools = h("div", { class: "card-tools wide" }, h("label", { class: "muted toggle" }, showMetrics, "step metrics"), live);
  const element = card("Events", { id: "events-card", bodyClass: null, extra: tools }, log);
  const placeholder = (text) => log.replaceChildren(h("div", { class: "log-empty" }, text));

  const append = (e) => {
    const stick = log.scrollTop + log.clientHeight >= log.scrollHeight - 30;  // follow the tail unless scrolled up
    if (lines === 0) log.replaceChildren();
    const dataset = { id: e.id, type: e.type };
    if (e.kind) dataset.kind = e.kind;  // what the event is about, for a reader of the page
    log.appendChild(h("div", { class: `log-line ${e.type} ${e.level}`, dataset },
      h("span", { class: "t", title: fullDate(e.created_at) }, clock(e.created_at)), h("span", { class: "m" }, e.message)));
    lines += 1;
    if (lines > MAX_LINES) { log.firstChild.remove(); lines -= 1; }
    log.dataset.count = lines;
    if (stick) log.scrollTop = log.scrollHeight;
  };

  // s: the stream's state (see sse.js); an empty log says what it is waiting for.
  const showStreamState = (s) => {
    live.className = `live-dot ${s}`;
    live.textContent = STATE_LABELS[s] || s;
    if (lines === 0) placeholder(s === "live" ? "Waiting for events…" : s === "ended" ? "No events." : "Waiting for the stream…");
  };

  return { element, append, showStreamState };
}
