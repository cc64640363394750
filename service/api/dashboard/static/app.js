// The rlhf-service dashboard: a single page with hash routes, talking to the /v1 API.
//   #/jobs[?status=S]        jobs list, polled
//   #/jobs/{id}              one job: curves, live event log (SSE), checkpoints, hyperparameters
//   #/compare?jobs=a,b&key=k curves of several jobs overlaid
//   #/new                    upload a dataset and start a job
import { lineChart, barChart, fmtNum, escapeHtml, PALETTE } from "./chart.js";

const KEY_STORE = "rlhf.apiKey";
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const STATUSES = ["running", "queued", "paused", "succeeded", "failed", "cancelled"];
const DEFAULT_KEYS = {
  dpo: ["loss", "rewards/margins", "rewards/accuracies", "eval/loss"],
  supervised: ["loss", "eval/loss"],
  reward_model: ["loss", "accuracy", "eval/loss"],
  rebel: ["rollout/reward_mean", "rollout/reward_gap", "regression_loss", "rollout/kl_to_base"],
  refuel: ["rollout/reward_mean", "rollout/reward_gap", "regression_loss", "rollout/kl_to_base"],
};
const ONLINE = new Set(["rebel", "refuel"]);
const HIDDEN_KEYS = new Set(["iteration", "step_offset"]);

// ---- tiny DOM helper -------------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "class") node.className = v;
    else if (k === "html") node.innerHTML = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}
const $ = (sel, root = document) => root.querySelector(sel);

function toast(message, kind = "") {
  const t = h("div", { class: `toast ${kind}`, role: "status" }, message);
  document.body.appendChild(t);
  setTimeout(() => t.remove(), 5000);
}

function ago(ts) {
  if (!ts) return "–";
  const s = Math.max(0, Date.now() / 1000 - ts);
  if (s < 60) return `${Math.floor(s)}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}
function duration(sec) {
  if (sec === null || sec === undefined || sec < 0) return "–";
  if (sec < 60) return `${Math.round(sec)}s`;
  if (sec < 3600) return `${Math.floor(sec / 60)}m ${Math.round(sec % 60)}s`;
  return `${Math.floor(sec / 3600)}h ${Math.floor((sec % 3600) / 60)}m`;
}
const fullDate = (ts) => (ts ? new Date(ts * 1000).toLocaleString() : "");
const clock = (ts) => new Date(ts * 1000).toLocaleTimeString([], { hour12: false });
const methodType = (job) => job?.method?.type || "dpo";

function badge(status) {
  return h("span", { class: `badge ${status}`, dataset: { status } }, status.replace("_", " "));
}
function progress(job) {
  const done = job.steps_completed || 0, total = job.total_steps;
  const pct = total ? Math.min(100, (100 * done) / total) : job.status === "succeeded" ? 100 : 0;
  return h("div", { class: `progress ${job.status}`, dataset: { steps: done, total: total ?? "" } },
    h("div", { class: "bar" }, h("span", { style: `width:${pct}%` })),
    h("span", { class: "label" }, total ? `${done}/${total}` : done ? `${done}` : "–"));
}

// ---- API access ------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message || `HTTP ${status}`);
    this.status = status;
    this.error = body?.error || null;
  }
}

function authHeaders() {
  const key = localStorage.getItem(KEY_STORE);
  return key ? { Authorization: `Bearer ${key}` } : {};
}

const conn = { ok: true };
function setConn(ok, text) {
  const node = $("#conn");
  if (!node) return;
  node.textContent = ok ? "" : text;
  node.classList.toggle("bad", !ok);
  conn.ok = ok;
}

async function api(path, { method = "GET", json, body, headers = {}, raw = false, signal } = {}) {
  const init = { method, headers: { ...authHeaders(), ...headers }, signal };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  } else if (body !== undefined) init.body = body;
  let res;
  try {
    res = await fetch(path, init);
  } catch (err) {
    if (err.name !== "AbortError") setConn(false, "Service unreachable");
    throw err;
  }
  setConn(true);
  if (!res.ok) {
    const data = await res.json().catch(() => null);
    if (res.status === 401) askForKey(data?.error?.code === "invalid_api_key" ? "invalid" : "missing");
    throw new ApiError(res.status, data);
  }
  return raw ? res : res.json();
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
function downloadLink(url, filename, text) {
  return h("a", {
    href: url, download: filename, class: "download-link",
    onclick: (ev) => {
      if (!localStorage.getItem(KEY_STORE)) return; // open mode: a plain link works
      ev.preventDefault();
      download(url, filename);
    },
  }, text);
}

// ---- the key dialog --------------------------------------------------------------------------

function askForKey(reason = "missing") {
  const dialog = $("#key-dialog");
  if (dialog.open) return;
  $("#key-reason").textContent = reason === "invalid"
    ? "The service refused the stored API key. Enter a valid key; it is kept in this browser only."
    : reason === "manual"
      ? "The key is kept in this browser only (localStorage) and sent as 'Authorization: Bearer …' with every request."
      : "This service requires an API key. It is kept in this browser only (localStorage) and sent as 'Authorization: Bearer …' with every request.";
  $("#key-input").value = "";
  dialog.showModal();
  $("#key-input").focus();
}
function setupKeyDialog() {
  $("#key-button").addEventListener("click", () => askForKey("manual"));
  $("#key-form").addEventListener("submit", (ev) => {
    const value = $("#key-input").value.trim();
    if (!value) { ev.preventDefault(); return; }
    localStorage.setItem(KEY_STORE, value);
    updateKeyButton();
    render();
  });
  $("#key-clear").addEventListener("click", () => {
    localStorage.removeItem(KEY_STORE);
    $("#key-dialog").close();
    updateKeyButton();
    render();
  });
}
function updateKeyButton() {
  $("#key-button").textContent = localStorage.getItem(KEY_STORE) ? "API key ✓" : "API key";
}

// ---- routing and page lifetime ---------------------------------------------------------------

let cleanups = [];
const onLeave = (fn) => cleanups.push(fn);

// Run fn now and every ms until the page changes; errors are shown, never fatal.
function every(ms, fn) {
  let timer = null, stopped = false;
  const tick = async () => {
    try { await fn(); } catch (err) { if (err.name !== "AbortError" && err.status !== 401) console.warn(err); }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  tick();
  const stop = () => { stopped = true; clearTimeout(timer); };
  onLeave(stop);
  return stop;
}

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/jobs";
  const [path, query = ""] = raw.split("?");
  return { path, params: new URLSearchParams(query) };
}
function setQuery(path, params) {
  const q = params.toString();
  history.replaceState(null, "", `#${path}${q ? `?${q}` : ""}`);
}

function render() {
  cleanups.forEach((fn) => fn());
  cleanups = [];
  const { path, params } = parseHash();
  const view = $("#view");
  view.replaceChildren();
  let m;
  let nav = "jobs";
  if ((m = path.match(/^\/jobs\/([A-Za-z0-9_-]+)$/))) jobPage(view, m[1]);
  else if (path.startsWith("/compare")) { nav = "compare"; comparePage(view, params); }
  else if (path.startsWith("/new")) { nav = "new"; newJobPage(view); }
  else jobsPage(view, params);
  document.querySelectorAll("[data-nav]").forEach((a) => a.classList.toggle("active", a.dataset.nav === nav));
}

// ---- jobs list -------------------------------------------------------------------------------

async function fetchJobs(limit = 100) {
  return (await api(`/v1/fine_tuning/jobs?limit=${limit}`)).data;
}

function jobsPage(view, params) {
  document.title = "Jobs · rlhf-service";
  let filter = params.get("status") || "all";
  const chips = h("div", { class: "chips", id: "status-filter" });
  const tbody = h("tbody");
  const note = h("div", { class: "empty", hidden: true });
  view.append(
    h("div", { class: "page-head" }, h("h1", {}, "Fine-tuning jobs"), h("div", { class: "spacer" }),
      h("a", { class: "button primary", href: "#/new" }, "New job")),
    h("div", { class: "card" },
      h("div", { class: "card-head" }, chips),
      h("table", { class: "clickable", id: "jobs-table" },
        h("thead", {}, h("tr", {}, h("th", {}, "Job"), h("th", {}, "Status"), h("th", {}, "Algorithm"),
          h("th", {}, "Model"), h("th", {}, "Created"), h("th", {}, "Progress"), h("th", { class: "num" }, "Duration"))),
        tbody),
      note));

  let jobs = [];
  const draw = () => {
    const counts = { all: jobs.length, active: 0 };
    for (const j of jobs) {
      counts[j.status] = (counts[j.status] || 0) + 1;
      if (!TERMINAL.has(j.status)) counts.active += 1;
    }
    chips.replaceChildren(...["all", "active", ...STATUSES].map((s) =>
      h("button", { class: `chip ${filter === s ? "on" : ""}`, dataset: { filter: s }, type: "button",
        onclick: () => { filter = s; setQuery("/jobs", new URLSearchParams(s === "all" ? "" : `status=${s}`)); draw(); } },
      s === "all" ? "All" : s[0].toUpperCase() + s.slice(1), h("span", { class: "count" }, counts[s] || 0))));
    const shown = jobs.filter((j) => filter === "all" || (filter === "active" ? !TERMINAL.has(j.status) : j.status === filter));
    tbody.replaceChildren(...shown.map((j) => {
      const end = j.finished_at || (TERMINAL.has(j.status) ? null : Date.now() / 1000);
      return h("tr", { dataset: { jobId: j.id, status: j.status }, onclick: () => { location.hash = `#/jobs/${j.id}`; } },
        h("td", {}, h("a", { class: "jobid", href: `#/jobs/${j.id}` }, j.id), j.suffix ? h("span", { class: "muted" }, ` · ${j.suffix}`) : null),
        h("td", {}, badge(j.status)),
        h("td", {}, h("span", { class: "tag" }, methodType(j))),
        h("td", {}, j.model),
        h("td", { title: fullDate(j.created_at) }, ago(j.created_at)),
        h("td", {}, progress(j)),
        h("td", { class: "num muted" }, end ? duration(end - j.created_at) : "–"));
    }));
    note.hidden = shown.length > 0;
    note.textContent = jobs.length ? "No jobs with this status." : "No jobs yet. Start one from \u201cNew job\u201d.";
  };
  every(2500, async () => { jobs = await fetchJobs(); draw(); });
}

// ---- metrics helpers -------------------------------------------------------------------------

function metricKeys(rows) {
  const keys = new Set();
  for (const r of rows) for (const [k, v] of Object.entries(r.values || {})) if (!HIDDEN_KEYS.has(k) && (typeof v === "number" || v === null)) keys.add(k);
  return [...keys].sort((a, b) => (a.startsWith("eval/") - b.startsWith("eval/")) || a.localeCompare(b));
}

// [[x, y], ...] for one key; x is the step, or the iteration (last value logged in each).
function pointsFor(rows, key, xMode = "step") {
  const pts = rows.filter((r) => key in (r.values || {})).map((r) => [xMode === "iteration" ? r.values.iteration : r.step, r.values[key]]);
  if (xMode !== "iteration") return pts;
  const last = new Map();
  for (const p of pts) if (p[0] !== undefined && p[0] !== null) last.set(p[0], p);
  return [...last.values()].sort((a, b) => a[0] - b[0]);
}

// How many distinct iterations the rows span (REBEL/REFUEL log one per step).
const iterations = (rows) => new Set(rows.map((r) => r.values?.iteration).filter((v) => v !== undefined && v !== null)).size;

async function fetchMetrics(jobId) {
  return (await api(`/v1/fine_tuning/jobs/${jobId}/metrics?max_points=1000`)).data;
}

// ---- SSE over fetch (EventSource cannot send Authorization) -----------------------------------

async function streamEvents(jobId, { onEvent, onState, isFinished, signal }) {
  let lastId = null, retry = 1000, failures = 0;
  while (!signal.aborted) {
    let cleanEnd = false;
    try {
      const headers = { ...authHeaders(), Accept: "text/event-stream" };
      if (lastId) headers["Last-Event-ID"] = lastId;
      const res = await fetch(`/v1/fine_tuning/jobs/${jobId}/events?stream=true`, { headers, signal });
      if (res.status === 401) { askForKey(); onState("stopped"); return; }
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      onState("live");
      failures = 0;
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "", frame = { data: [] };
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let nl;
        while ((nl = buf.indexOf("\n")) >= 0) {
          let line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (line.endsWith("\r")) line = line.slice(0, -1);
          if (line === "") {
            if (frame.data.length) {
              if (frame.id) lastId = frame.id;
              try { onEvent(JSON.parse(frame.data.join("\n")), frame.event); } catch (err) { console.warn("bad SSE frame", err); }
            }
            frame = { data: [] };
            continue;
          }
          if (line.startsWith(":")) continue;  // keep-alive comment
          const c = line.indexOf(":");
          const field = c < 0 ? line : line.slice(0, c);
          let v = c < 0 ? "" : line.slice(c + 1);
          if (v.startsWith(" ")) v = v.slice(1);
          if (field === "data") frame.data.push(v);
          else if (field === "id") frame.id = v;
          else if (field === "event") frame.event = v;
          else if (field === "retry" && /^\d+$/.test(v)) retry = Number(v);
        }
      }
      cleanEnd = true;
    } catch (err) {
      if (signal.aborted) return;
      failures += 1;
    }
    // The server ends a stream once the job has finished and every event was sent.
    if (cleanEnd && (await isFinished().catch(() => false))) { onState("ended"); return; }
    onState("retrying");
    await new Promise((r) => setTimeout(r, Math.min(15000, retry * 2 ** Math.min(failures, 4))));
  }
}

// ---- job page --------------------------------------------------------------------------------

function card(title, { id, extra, bodyClass = "card-body" } = {}, ...body) {
  return h("section", { class: "card", id },
    h("div", { class: "card-head" }, h("h2", {}, title), extra ? h("div", { class: "spacer" }) : null, extra),
    bodyClass === null ? body : h("div", { class: bodyClass }, body));
}

function jobPage(view, jobId) {
  document.title = `${jobId} · rlhf-service`;
  const abort = new AbortController();
  onLeave(() => abort.abort());
  const state = { job: null, metrics: [], keys: null, xMode: null, checkpoints: [], finishedSeen: false };

  const head = h("div");
  const errorBox = h("div");
  const stats = h("div", { class: "stats" });
  const keyChips = h("div", { class: "chips", id: "metric-keys" });
  const xSeg = h("div", { class: "seg", id: "x-mode", hidden: true });
  const chartsBox = h("div", { class: "charts", id: "charts" });
  const log = h("div", { class: "log", id: "event-log", dataset: { count: 0 } }, h("div", { class: "log-empty" }, "Connecting…"));
  const live = h("span", { class: "live-dot", id: "stream-state" }, "connecting");
  const showMetrics = h("input", { type: "checkbox", checked: true, onchange: () => log.classList.toggle("hide-metrics", !showMetrics.checked) });
  const ckptBody = h("div");
  const hpBody = h("div");
  const winBox = h("div", { id: "win-rate" });

  view.append(
    h("div", { class: "crumbs" }, h("a", { href: "#/jobs" }, "Jobs"), " / ", h("span", { class: "mono" }, jobId)),
    head, errorBox,
    h("section", { class: "card" }, stats),
    card("Metrics", { id: "metrics-card", extra: h("div", { style: "display:flex;gap:10px;align-items:center" },
      xSeg, h("a", { href: `#/compare?jobs=${jobId}`, class: "button" }, "Compare…")) },
      h("div", { style: "margin-bottom:12px" }, keyChips), chartsBox),
    winBox,
    h("div", { class: "grid2" },
      card("Events", { id: "events-card", bodyClass: null, extra: h("div", { style: "display:flex;gap:14px;align-items:center" },
        h("label", { class: "muted", style: "font-size:12px;display:flex;gap:5px;align-items:center" }, showMetrics, "step metrics"), live) }, log),
      h("div", {},
        card("Checkpoints", { id: "checkpoints-card", bodyClass: null }, ckptBody),
        card("Hyperparameters", { id: "hyperparameters-card", bodyClass: null }, hpBody))));

  // -- header and stats
  const drawHead = () => {
    const j = state.job;
    const actions = h("div", { style: "display:flex;gap:8px" });
    const act = (verb, label, cls = "") => h("button", { class: cls, type: "button", dataset: { action: verb }, onclick: async (ev) => {
      if (verb === "cancel" && !confirm(`Cancel ${j.id}?`)) return;
      ev.target.disabled = true;
      try { state.job = await api(`/v1/fine_tuning/jobs/${j.id}/${verb}`, { method: "POST" }); drawHead(); }
      catch (err) { toast(err.message, "error"); ev.target.disabled = false; }
    } }, label);
    if (j.status === "running" || j.status === "queued") actions.append(act("pause", "Pause"));
    if (j.status === "paused") actions.append(act("resume", "Resume"));
    if (!TERMINAL.has(j.status)) actions.append(act("cancel", "Cancel", "danger"));
    if (j.status === "succeeded") {
      const link = downloadLink(`/v1/fine_tuning/jobs/${j.id}/adapter`, `${j.id}-adapter.zip`, "Download adapter");
      link.classList.add("button", "primary");
      link.id = "final-adapter";
      actions.append(link);
    }
    head.replaceChildren(h("div", { class: "page-head" },
      h("div", {},
        h("div", { style: "display:flex;gap:10px;align-items:center" }, h("h1", { class: "mono" }, j.id), badge(j.status)),
        h("div", { class: "sub" },
          h("span", {}, h("span", { class: "tag" }, methodType(j)), " on ", h("b", {}, j.model)),
          j.suffix ? h("span", {}, "suffix ", h("span", { class: "mono" }, j.suffix)) : null,
          h("span", { title: fullDate(j.created_at) }, `created ${ago(j.created_at)}`),
          j.fine_tuned_model ? h("span", { class: "mono" }, j.fine_tuned_model) : null)),
      h("div", { class: "spacer" }), actions));
    errorBox.replaceChildren(...(j.error ? [h("div", { class: "alert error", id: "job-error" },
      h("b", {}, "Job failed: "), j.error.message, " ", h("span", { class: "code" }, `(${j.error.code})`))] : []));
    const end = j.finished_at || (TERMINAL.has(j.status) ? null : Date.now() / 1000);
    const stat = (k, v, extra) => h("div", { class: "stat" }, h("div", { class: "k" }, k), h("div", { class: "v" }, v), extra);
    stats.replaceChildren(
      h("div", { class: "stat", style: "grid-column: span 2" }, h("div", { class: "k" }, "Progress"), h("div", { style: "margin-top:6px" }, progress(j))),
      stat("Steps", `${j.steps_completed || 0}${j.total_steps ? ` / ${j.total_steps}` : ""}`),
      stat("Trained tokens", j.trained_tokens ? j.trained_tokens.toLocaleString() : "–"),
      stat(j.status === "running" ? "Elapsed" : "Duration", end ? duration(end - j.created_at) : "–"),
      stat(j.estimated_finish ? "Estimated finish" : "Finished", j.estimated_finish ? new Date(j.estimated_finish * 1000).toLocaleTimeString() : (j.finished_at ? new Date(j.finished_at * 1000).toLocaleTimeString() : "–")));
  };

  // -- metrics
  const storeKey = () => `rlhf.keys.${methodType(state.job)}`;
  const drawMetrics = () => {
    const all = metricKeys(state.metrics);
    const type = methodType(state.job);
    if (!state.keys) {
      const saved = JSON.parse(localStorage.getItem(storeKey()) || "null");
      const wanted = saved || DEFAULT_KEYS[type] || ["loss"];
      state.keys = wanted.filter((k) => all.includes(k));
      if (!state.keys.length && all.length) state.keys = all.slice(0, 3);
      if (!all.length) state.keys = null;  // decide again once metrics arrive
    }
    const hasIter = iterations(state.metrics) > 1;
    if (!state.xMode) state.xMode = hasIter && ONLINE.has(type) ? "iteration" : "step";
    xSeg.hidden = !hasIter;
    xSeg.replaceChildren(...["step", "iteration"].map((m) => h("button", { type: "button", class: state.xMode === m ? "on" : "", onclick: () => { state.xMode = m; drawMetrics(); } }, `per ${m}`)));
    const selected = state.keys || [];
    keyChips.replaceChildren(...(all.length ? all.map((k) => h("button", {
      type: "button", class: `chip ${selected.includes(k) ? "on" : ""}`, dataset: { key: k },
      onclick: () => {
        state.keys = selected.includes(k) ? selected.filter((x) => x !== k) : [...selected, k];
        localStorage.setItem(storeKey(), JSON.stringify(state.keys));
        drawMetrics();
      } }, k)) : [h("span", { class: "muted" }, "Metrics appear here once the first step is logged.")]));
    const boxes = selected.map((k) => {
      const chart = h("div", { dataset: { key: k } });
      return [h("div", { class: "chart-box" }, h("div", { class: "chart-title" }, k), chart), chart, k];
    });
    chartsBox.replaceChildren(...boxes.map((b) => b[0]));
    for (const [, chart, k] of boxes) {
      lineChart(chart, [{ name: k, points: pointsFor(state.metrics, k, state.xMode) }],
        { xLabel: state.xMode, integerX: true, yFormat: k.includes("accurac") ? (v) => `${Math.round(v * 100)}%` : fmtNum });
    }
  };

  // -- checkpoints
  const drawCheckpoints = () => {
    const rows = [...state.checkpoints].sort((a, b) => a.step_number - b.step_number);
    if (!rows.length) { ckptBody.replaceChildren(h("div", { class: "empty" }, "No checkpoints yet.")); return; }
    const prefer = [...(state.keys || []), "loss", "rewards/margins", "rewards/accuracies", "regression_loss"];
    const available = new Set(rows.flatMap((c) => Object.keys(c.metrics || {})));
    const cols = [...new Set(prefer)].filter((k) => available.has(k) && k !== "step").slice(0, 3);
    const short = (k) => k.split("/").pop();
    const fmt = (k, v) => (k.includes("accurac") && typeof v === "number" ? `${Math.round(v * 100)}%` : fmtNum(v));
    ckptBody.replaceChildren(h("table", { id: "checkpoints", class: "compact" },
      h("thead", {}, h("tr", {}, h("th", {}, "Step"), ...cols.map((k) => h("th", { class: "num", title: k }, short(k))), h("th", { class: "num" }, "Adapter"))),
      h("tbody", {}, ...rows.map((c) => h("tr", { dataset: { step: c.step_number }, title: `saved ${fullDate(c.created_at)}` },
        h("td", { class: "mono" }, c.step_number),
        ...cols.map((k) => h("td", { class: "num" }, fmt(k, c.metrics?.[k]))),
        h("td", { class: "num" }, downloadLink(`/v1/fine_tuning/jobs/${jobId}/checkpoints/${c.id}/adapter`,
          `${jobId}-step-${c.step_number}-adapter.zip`, "download")))))));
  };

  // -- hyperparameters
  const drawHyper = () => {
    const j = state.job;
    const kv = [["seed", j.seed], ["training file", j.training_file], ["validation file", j.validation_file || "–"],
      ["epochs", j.hyperparameters?.n_epochs], ["batch size", j.hyperparameters?.batch_size],
      ["lr multiplier", j.hyperparameters?.learning_rate_multiplier]];
    if (j.metadata && Object.keys(j.metadata).length) kv.push(["metadata", JSON.stringify(j.metadata)]);
    hpBody.replaceChildren(
      h("dl", { class: "kv" }, ...kv.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v ?? "–"))])),
      h("pre", { class: "json", id: "method-json" }, JSON.stringify(j.method, null, 2)));
  };

  // -- per-turn win rate (REFUEL's evaluation; REBEL has one too)
  const drawWinRate = () => {
    const j = state.job;
    const ev = j.result?.evaluation;
    const turns = ev && (ev.turns || ev.per_turn);
    if (!Array.isArray(turns) || !turns.length) {
      winBox.replaceChildren(...(ONLINE.has(methodType(j)) ? [card("Win rate against the base model", {},
        h("div", { class: "muted" }, TERMINAL.has(j.status) ? "This job has no win-rate evaluation." : "The per-turn win rate appears here when the job has finished."))] : []));
      return;
    }
    const avg = ev.average_win_rate ?? ev.average;
    const chart = h("div", { id: "win-rate-chart" });
    const pct = (v) => (v === null || v === undefined ? "–" : `${(v * 100).toFixed(1)}%`);
    winBox.replaceChildren(card("Win rate against the base model", {
      extra: h("span", { class: "hint" }, avg !== undefined && avg !== null ? `average ${pct(avg)}` : "", ev.judge?.name ? ` · judge ${ev.judge.name}` : "") },
    h("div", { style: "display:grid;grid-template-columns:minmax(0,2fr) minmax(0,1fr);gap:16px;align-items:center" },
      chart,
      h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Turn"), h("th", { class: "num" }, "Win rate"), h("th", { class: "num" }, "95% CI"), h("th", { class: "num" }, "n"))),
        h("tbody", {}, ...turns.map((t) => h("tr", {}, h("td", {}, `h = ${t.turn}`), h("td", { class: "num" }, pct(t.win_rate)),
          h("td", { class: "num muted" }, t.ci95 ? `${pct(t.ci95[0])} – ${pct(t.ci95[1])}` : "–"), h("td", { class: "num muted" }, t.n ?? "–"))))))));
    barChart(chart, turns.map((t) => ({ label: `turn ${t.turn}`, value: t.win_rate, lo: t.ci95?.[0], hi: t.ci95?.[1] })),
      { yMin: 0, yMax: 1, ref: 0.5, yFormat: (v) => `${Math.round(v * 100)}%` });
  };

  // -- the event log
  let lines = 0;
  const appendEvent = (e) => {
    const stick = log.scrollTop + log.clientHeight >= log.scrollHeight - 30;
    if (lines === 0) log.replaceChildren();
    log.appendChild(h("div", { class: `log-line ${e.type} ${e.level}`, dataset: { id: e.id, type: e.type } },
      h("span", { class: "t", title: fullDate(e.created_at) }, clock(e.created_at)), h("span", { class: "m" }, e.message)));
    lines += 1;
    if (lines > 3000) { log.firstChild.remove(); lines -= 1; }
    log.dataset.count = lines;
    if (stick) log.scrollTop = log.scrollHeight;
  };

  // -- data
  const refreshMetrics = async () => { state.metrics = await fetchMetrics(jobId); drawMetrics(); };
  const refreshCheckpoints = async () => { state.checkpoints = (await api(`/v1/fine_tuning/jobs/${jobId}/checkpoints?limit=100`)).data; drawCheckpoints(); };
  const refreshJob = async () => {
    const before = state.job;
    state.job = await api(`/v1/fine_tuning/jobs/${jobId}`, { signal: abort.signal });
    drawHead();
    if (!before) { drawHyper(); drawWinRate(); }
    else if (before.status !== state.job.status || (!before.result && state.job.result)) drawWinRate();
  };
  // Coalesce refreshes: catching up on a long job's stream delivers thousands of events at once.
  const debounce = (fn, ms) => {
    let timer = null;
    onLeave(() => clearTimeout(timer));
    return () => { clearTimeout(timer); timer = setTimeout(() => fn().catch(() => {}), ms); };
  };
  const metricsSoon = debounce(refreshMetrics, 700);
  const checkpointsSoon = debounce(refreshCheckpoints, 500);
  const jobSoon = debounce(refreshJob, 300);

  (async () => {
    try {
      await refreshJob();
    } catch (err) {
      if (err.name === "AbortError") return;
      view.replaceChildren(h("div", { class: "alert error" }, err.status === 404 ? `No such job: ${jobId}` : err.message));
      return;
    }
    await Promise.allSettled([refreshMetrics(), refreshCheckpoints()]);
    // Polling backs up the stream: job header every 3 s, metrics and checkpoints every 6 s while active.
    let settledPolls = 0;
    every(3000, async () => {
      if (settledPolls > 1) return;
      await refreshJob();
      if (TERMINAL.has(state.job.status)) settledPolls += 1;
    });
    every(6000, async () => {
      if (TERMINAL.has(state.job.status) && state.finishedSeen) return;
      if (TERMINAL.has(state.job.status)) state.finishedSeen = true;
      await Promise.all([refreshMetrics(), refreshCheckpoints()]);
    });
    streamEvents(jobId, {
      signal: abort.signal,
      isFinished: async () => { await refreshJob(); return TERMINAL.has(state.job.status); },
      onState: (s) => {
        live.className = `live-dot ${s}`;
        live.textContent = { live: "live", retrying: "reconnecting…", ended: "job finished", stopped: "stopped" }[s] || s;
        if (lines === 0 && s !== "live") log.replaceChildren(h("div", { class: "log-empty" }, s === "ended" ? "No events." : "Waiting for the stream…"));
        if (lines === 0 && s === "live") log.replaceChildren(h("div", { class: "log-empty" }, "Waiting for events…"));
      },
      onEvent: (e) => {
        appendEvent(e);
        if (e.type === "metrics") metricsSoon();
        if (/checkpoint/i.test(e.message)) checkpointsSoon();
        if (e.type !== "metrics") jobSoon();
      },
    });
  })();
}

// ---- compare ---------------------------------------------------------------------------------

function comparePage(view, params) {
  document.title = "Compare · rlhf-service";
  const selected = new Set((params.get("jobs") || "").split(",").filter(Boolean));
  let key = params.get("key") || null;
  let xMode = params.get("x") || "step";
  let jobs = [];
  const cache = new Map(); // job id -> {rows, at, status}

  const filterInput = h("input", { type: "text", placeholder: "Filter by id, model, method, status…", style: "width:100%" });
  const picker = h("div", { class: "picker", id: "compare-picker" });
  const keySelect = h("select", { id: "compare-key" });
  const xSeg = h("div", { class: "seg" });
  const chart = h("div", { id: "compare-chart" });
  const info = h("div", { class: "muted", style: "font-size:12px;margin-top:8px" });
  view.append(
    h("div", { class: "page-head" }, h("h1", {}, "Compare runs")),
    h("div", { class: "compare" },
      h("section", { class: "card" }, h("div", { class: "card-head" }, h("h2", {}, "Jobs"), h("span", { class: "hint" }, "pick two or more")),
        h("div", { style: "padding:10px 12px;border-bottom:1px solid var(--border)" }, filterInput), picker),
      h("section", { class: "card" },
        h("div", { class: "card-head" }, h("h2", {}, "Metric"), keySelect, h("div", { class: "spacer" }), xSeg),
        h("div", { class: "card-body" }, chart, info))));

  const sync = () => {
    const p = new URLSearchParams();
    if (selected.size) p.set("jobs", [...selected].join(","));
    if (key) p.set("key", key);
    if (xMode !== "step") p.set("x", xMode);
    setQuery("/compare", p);
  };
  const drawPicker = () => {
    const q = filterInput.value.trim().toLowerCase();
    const shown = jobs.filter((j) => !q || [j.id, j.model, methodType(j), j.status, j.suffix || ""].some((s) => s.toLowerCase().includes(q)));
    picker.replaceChildren(...shown.map((j) => h("label", { dataset: { jobId: j.id } },
      h("input", { type: "checkbox", checked: selected.has(j.id), onchange: (ev) => {
        if (ev.target.checked) selected.add(j.id); else selected.delete(j.id);
        sync(); refresh();
      } }),
      h("div", { style: "min-width:0;flex:1" }, h("div", { class: "jobid", title: j.id }, j.id, j.suffix ? h("span", { class: "muted" }, ` · ${j.suffix}`) : null),
        h("div", { class: "meta" }, badge(j.status), ` ${methodType(j)} · ${j.model} · ${ago(j.created_at)}`)))));
    if (!shown.length) picker.append(h("div", { class: "empty" }, "No jobs."));
  };
  filterInput.addEventListener("input", drawPicker);

  const drawChart = () => {
    const ids = [...selected];
    const rowsOf = (id) => cache.get(id)?.rows || [];
    const keys = [...new Set(ids.flatMap((id) => metricKeys(rowsOf(id))))];
    if (!key || !keys.includes(key)) key = keys.includes("loss") ? "loss" : keys[0] || key;
    keySelect.replaceChildren(...keys.map((k) => h("option", { value: k, selected: k === key }, k)));
    keySelect.disabled = !keys.length;
    const hasIter = ids.some((id) => iterations(rowsOf(id)) > 1);
    xSeg.hidden = !hasIter;
    xSeg.replaceChildren(...["step", "iteration"].map((m) => h("button", { type: "button", class: xMode === m ? "on" : "", onclick: () => { xMode = m; sync(); drawChart(); } }, `per ${m}`)));
    const mode = hasIter ? xMode : "step";
    if (!ids.length) { chart.replaceChildren(h("div", { class: "chart-empty" }, "Select jobs on the left to overlay their curves.")); info.textContent = ""; return; }
    const series = ids.map((id, i) => {
      const j = jobs.find((x) => x.id === id);
      return { name: id, label: j ? `${id} (${methodType(j)}${j.suffix ? `, ${j.suffix}` : ""})` : id, color: PALETTE[i % PALETTE.length], points: key ? pointsFor(rowsOf(id), key, mode) : [] };
    });
    lineChart(chart, series, { height: 340, xLabel: mode, integerX: true, legend: true, emptyText: key ? `No “${key}” values in these jobs yet` : "No metrics yet" });
    info.textContent = series.map((s) => `${s.name}: ${s.points.length} points`).join(" · ");
    sync();
  };
  keySelect.addEventListener("change", () => { key = keySelect.value; drawChart(); });

  const refresh = async () => {
    await Promise.all([...selected].map(async (id) => {
      const c = cache.get(id);
      const j = jobs.find((x) => x.id === id);
      if (c && j && TERMINAL.has(c.status) && c.status === j.status) return; // finished: cached for good
      try { cache.set(id, { rows: await fetchMetrics(id), status: j?.status }); }
      catch (err) { if (err.status === 404) selected.delete(id); }
    }));
    drawChart();
  };
  every(4000, async () => {
    jobs = await fetchJobs();
    drawPicker();
    await refresh();
  });
}

// ---- new job: upload + create ----------------------------------------------------------------

const HP_DEFAULTS = {
  dpo: { n_epochs: 1, batch_size: 4, learning_rate_multiplier: "auto", beta: 0.1, loss_type: "sigmoid" },
  supervised: { n_epochs: 1, batch_size: 4, learning_rate_multiplier: "auto" },
  reward_model: { n_epochs: 1, batch_size: 4 },
  rebel: { iterations: 2, rollouts_per_iteration: 8, eta: 1.0, max_new_tokens: 64, reward: { type: "function", name: "length_penalty" } },
  refuel: { iterations: 2, rollouts_per_iteration: 8, num_turns: 3, eta: 1.0, max_new_tokens: 64, reward: { type: "function", name: "length_penalty" } },
};

// The file's lines around each issue, the bad line highlighted and its message under it.
function issuesView(error, text) {
  const issues = error.issues && error.issues.length ? error.issues : [{ line: null, field: error.param, code: error.code, message: error.message }];
  const lines = text === null ? null : text.split(/\r?\n/);
  const box = h("div", { class: "issues", id: "upload-issues" },
    h("div", { class: "issues-head" }, error.message));
  const general = issues.filter((i) => !i.line || !lines);
  const byLine = new Map();
  for (const i of issues) if (i.line && lines) (byLine.get(i.line) || byLine.set(i.line, []).get(i.line)).push(i);
  const src = h("div", { class: "src" });
  const sorted = [...byLine.keys()].sort((a, b) => a - b);
  const show = new Set(sorted.flatMap((ln) => [ln - 1, ln, ln + 1]).filter((n) => n >= 1 && n <= lines.length));
  let prev = 0;
  for (const n of [...show].sort((a, b) => a - b)) {
    if (prev && n > prev + 1) src.append(h("div", { class: "gap" }, "⋮"));
    prev = n;
    const bad = byLine.get(n);
    src.append(h("div", { class: `ln${bad ? " bad" : ""}`, dataset: { line: n } }, h("span", { class: "no" }, n),
      h("code", {}, (lines[n - 1] ?? "").slice(0, 400))));
    for (const i of bad || []) {
      src.append(h("div", { class: "issue-msg line-error", dataset: { line: n, field: i.field || "" } },
        h("b", {}, `Line ${n}`), i.field ? ` · ${i.field}` : "", `: ${i.message}`, h("span", { class: "code" }, i.code || "")));
    }
  }
  if (sorted.length) box.append(src);
  for (const i of general) {
    box.append(h("div", { class: "src" }, h("div", { class: "issue-msg line-error", dataset: { line: i.line || "", field: i.field || "" } },
      i.line ? h("b", {}, `Line ${i.line}: `) : null, i.field ? `${i.field}: ` : "", i.message, h("span", { class: "code" }, i.code || ""))));
  }
  return box;
}

function newJobPage(view) {
  document.title = "New job · rlhf-service";
  const fileInput = h("input", { type: "file", id: "upload-file", accept: ".jsonl,.json,application/jsonl,text/plain" });
  const uploadBtn = h("button", { type: "button", class: "primary", id: "upload-button" }, "Upload and validate");
  const uploadResult = h("div", { id: "upload-result" });
  const trainSelect = h("select", { id: "training-file", style: "min-width:340px" });
  const validSelect = h("select", { id: "validation-file", style: "min-width:240px" });
  const modelSelect = h("select", { id: "model", style: "min-width:220px" });
  const methodSelect = h("select", { id: "method-type" }, ...Object.keys(HP_DEFAULTS).map((t) => h("option", { value: t }, t)));
  const hpText = h("textarea", { id: "hyperparameters", spellcheck: "false" });
  const seedInput = h("input", { type: "number", id: "seed", placeholder: "random", min: 0, style: "width:120px" });
  const suffixInput = h("input", { type: "text", id: "suffix", placeholder: "optional", style: "width:180px" });
  const createBtn = h("button", { type: "submit", class: "primary", id: "create-button" }, "Start job");
  const createResult = h("div", { id: "create-result" });
  const hpError = h("div", { class: "field-error", id: "hyperparameters-error" });
  let hpTouched = false;

  const setDefaults = () => { if (!hpTouched) hpText.value = JSON.stringify(HP_DEFAULTS[methodSelect.value], null, 2); };
  methodSelect.addEventListener("change", () => { hpTouched = false; setDefaults(); });
  hpText.addEventListener("input", () => { hpTouched = true; });
  setDefaults();

  view.append(
    h("div", { class: "page-head" }, h("h1", {}, "New fine-tuning job")),
    card("1 · Training data", { id: "upload-card" },
      h("p", { class: "muted", style: "margin:0 0 10px" }, "JSONL, one example per line: OpenAI preference format, TRL prompt/chosen/rejected, chat messages, prompts or dialogue seeds. The service validates every line on upload."),
      h("div", { class: "form-row" }, fileInput, uploadBtn),
      uploadResult),
    h("form", { id: "create-form", onsubmit: (ev) => { ev.preventDefault(); create(); } },
      card("2 · Model and method", { id: "create-card" },
        h("div", { class: "form-row" },
          h("label", { class: "field" }, "Training file", trainSelect),
          h("label", { class: "field" }, "Validation file", validSelect)),
        h("div", { class: "form-row" },
          h("label", { class: "field" }, "Base model", modelSelect),
          h("label", { class: "field" }, "Algorithm", methodSelect),
          h("label", { class: "field" }, "Seed", seedInput),
          h("label", { class: "field" }, "Suffix", suffixInput)),
        h("label", { class: "field", style: "margin-bottom:12px" }, "Hyperparameters (JSON; omitted keys take their defaults)", hpText, hpError),
        h("div", { style: "display:flex;gap:10px;align-items:center" }, createBtn),
        createResult)));

  const loadFiles = async (selectId) => {
    const files = (await api("/v1/files?limit=200")).data;
    const opt = (f) => h("option", { value: f.id, selected: f.id === selectId }, `${f.filename} · ${f.format} · ${f.num_examples} examples · ${f.id}`);
    trainSelect.replaceChildren(...(files.length ? files.map(opt) : [h("option", { value: "" }, "Upload a file first")]));
    validSelect.replaceChildren(h("option", { value: "" }, "none"), ...files.map((f) => h("option", { value: f.id }, `${f.filename} · ${f.id}`)));
  };
  loadFiles().catch(() => {});
  api("/dashboard/api/models").then((r) => {
    const models = r.data.filter((m) => m.kind !== "reward_model");
    modelSelect.replaceChildren(...models.map((m) => h("option", { value: m.id, title: m.description || "" }, m.id)));
  }).catch(() => {});

  uploadBtn.addEventListener("click", async () => {
    const file = fileInput.files[0];
    uploadResult.replaceChildren();
    if (!file) { uploadResult.append(h("div", { class: "field-error" }, "Choose a file first.")); return; }
    uploadBtn.disabled = true;
    uploadBtn.textContent = "Validating…";
    const form = new FormData();
    form.append("purpose", "fine-tune");
    form.append("file", file, file.name);
    try {
      const f = await api("/v1/files", { method: "POST", body: form });
      uploadResult.append(h("div", { class: "alert info", id: "upload-ok", style: "margin:8px 0 0" },
        `Uploaded ${f.filename}: ${f.num_examples} examples, format ${f.format} (${f.id}).`));
      await loadFiles(f.id);
    } catch (err) {
      if (!err.error) { uploadResult.append(h("div", { class: "alert error" }, err.message)); return; }
      // Read the file locally to show the lines the API names (only a preview, capped).
      const text = file.size <= 20 * 1024 * 1024 ? await file.text().catch(() => null) : null;
      uploadResult.append(issuesView(err.error, text));
    } finally {
      uploadBtn.disabled = false;
      uploadBtn.textContent = "Upload and validate";
    }
  });

  async function create() {
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
      const param = err.error?.param || "";
      const target = { model: modelSelect, training_file: trainSelect, validation_file: validSelect, seed: seedInput, suffix: suffixInput }[param.split(".")[0]];
      if (param.startsWith("method")) { hpText.classList.add("invalid"); hpError.textContent = `${param}: ${err.message}`; }
      else if (target) target.classList.add("invalid");
      createResult.append(h("div", { class: "alert error", id: "create-error", style: "margin:12px 0 0" }, err.message,
        param ? h("span", { class: "code" }, ` (${param})`) : null));
    } finally {
      createBtn.disabled = false;
    }
  }
}

// ---- start -----------------------------------------------------------------------------------

setupKeyDialog();
updateKeyButton();
window.addEventListener("hashchange", render);
render();
