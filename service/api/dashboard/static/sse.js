// A job's event stream, read as server-sent events over fetch(): EventSource cannot send the
// Authorization header. After a dropped connection it reconnects with Last-Event-ID, so the
// server resumes after the last event shown and nothing is repeated or lost.

import { authHeaders, reportUnauthorized } from "./api.js";

const MAX_BACKOFF_MS = 15000;

// Feeds text chunks in, calls onFrame({id, event, data}) per complete frame and onRetry(ms) when
// the server sets the reconnect delay. Chunks may split lines anywhere: the tail is kept.
function frameReader({ onFrame, onRetry }) {
  let buf = "", frame = { data: [] };
  const line = (text) => {
    if (text === "") {  // a blank line ends the frame
      if (frame.data.length) onFrame({ id: frame.id, event: frame.event, data: frame.data.join("\n") });
      frame = { data: [] };
      return;
    }
    if (text.startsWith(":")) return;  // a comment: the server's keep-alive
    const c = text.indexOf(":");
    const field = c < 0 ? text : text.slice(0, c);
    let value = c < 0 ? "" : text.slice(c + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") frame.data.push(value);
    else if (field === "id") frame.id = value;
    else if (field === "event") frame.event = value;
    else if (field === "retry" && /^\d+$/.test(value)) onRetry(Number(value));
  };
  return (chunk) => {
    buf += chunk;
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const text = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      line(text.endsWith("\r") ? text.slice(0, -1) : text);
    }
  };
}

/**
 * Follows /v1/fine_tuning/jobs/{jobId}/events?stream=true until `signal` aborts or the job is over.
 * onEvent(event, eventName): one parsed event; onState(s): "live", "retrying", "ended", "stopped";
 * isFinished(): asked when the server ends a stream cleanly, since it does so once the job has
 * finished and every event was sent (and also when it restarts: then we reconnect).
 */
export async function followJobEvents(jobId, { onEvent, onState, isFinished, signal }) {
  let lastId = null, retryMs = 1000, failures = 0;
  const onFrame = (frame) => {
    if (frame.id) lastId = frame.id;
    try { onEvent(JSON.parse(frame.data), frame.event); } catch (err) { console.warn("bad SSE frame", err); }
  };
  const onRetry = (ms) => { retryMs = ms; };
  while (!signal.aborted) {
    let cleanEnd = false;
    // A new reader per connection: half a frame from a dropped one must not join the next.
    const feed = frameReader({ onFrame, onRetry });
    try {
      const headers = { ...authHeaders(), Accept: "text/event-stream" };
      if (lastId) headers["Last-Event-ID"] = lastId;
      const res = await fetch(`/v1/fine_tuning/jobs/${jobId}/events?stream=true`, { headers, signal });
      if (res.status === 401) { reportUnauthorized(); onState("stopped"); return; }
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      onState("live");
      failures = 0;
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        feed(value);
      }
      cleanEnd = true;
    } catch (err) {
      if (signal.aborted) return;
      failures += 1;
    }
    if (cleanEnd && (await isFinished().catch(() => false))) { onState("ended"); return; }
    onState("retrying");
    await new Promise((r) => setTimeout(r, Math.min(MAX_BACKOFF_MS, retryMs * 2 ** Math.min(failures, 4))));
  }
}
