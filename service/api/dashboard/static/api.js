// The dashboard's only client of the API: the stored key, JSON in and out, and the API's error
// envelope ({"error": {message, code, param, issues}}) turned into an ApiError.
//
// It knows nothing of the page around it. What the page must react to is announced on
// `apiEvents` instead: "unauthorized" (detail.reason: "missing" or "invalid") when the service
// wants a (better) key, and "connection" (detail.ok) when the service stops or starts answering.

const KEY_STORE = "rlhf.apiKey";

export const storedKey = () => localStorage.getItem(KEY_STORE);
export const saveKey = (key) => localStorage.setItem(KEY_STORE, key);
export const forgetKey = () => localStorage.removeItem(KEY_STORE);

export function authHeaders() {
  const key = storedKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

export const apiEvents = new EventTarget();
const announce = (type, detail) => apiEvents.dispatchEvent(new CustomEvent(type, { detail }));
export const reportUnauthorized = (reason = "missing") => announce("unauthorized", { reason });

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message || `HTTP ${status}`);
    this.status = status;
    this.error = body?.error || null;  // the envelope's fields, for pages that point at `param`
  }
}

// json: a body sent as JSON; body: sent as is (FormData); raw: the Response, not its JSON.
export async function api(path, { method = "GET", json, body, headers = {}, raw = false, signal } = {}) {
  const init = { method, headers: { ...authHeaders(), ...headers }, signal };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  } else if (body !== undefined) init.body = body;
  let res;
  try {
    res = await fetch(path, init);
  } catch (err) {
    if (err.name !== "AbortError") announce("connection", { ok: false });
    throw err;
  }
  announce("connection", { ok: true });
  if (!res.ok) {
    const data = await res.json().catch(() => null);
    if (res.status === 401) reportUnauthorized(data?.error?.code === "invalid_api_key" ? "invalid" : "missing");
    throw new ApiError(res.status, data);
  }
  return raw ? res : res.json();
}

// The first page of a list endpoint. The pages ask for more than they expect to show
// (100 jobs, 200 files) rather than follow `has_more`: the dashboard is a window, not an export.
export async function firstPage(path, limit) {
  return (await api(`${path}?limit=${limit}`)).data;
}

export const fetchJobs = (limit = 100) => firstPage("/v1/fine_tuning/jobs", limit);
export const fetchJob = (jobId, { signal } = {}) => api(`/v1/fine_tuning/jobs/${jobId}`, { signal });
export const fetchCheckpoints = (jobId) => firstPage(`/v1/fine_tuning/jobs/${jobId}/checkpoints`, 100);
export const fetchFiles = () => firstPage("/v1/files", 200);
export const fetchModels = async () => (await api("/dashboard/api/models")).data;

// Every sample of a job, oldest first: the base's at step 0 must be there beside the latest
// step's, so the pages follow `has_more` here (a few prompts per evaluation: a handful of pages).
export async function fetchSamples(jobId, { maxPages = 20 } = {}) {
  const out = [];
  let after = null;
  for (let page = 0; page < maxPages; page++) {
    const res = await api(`/v1/fine_tuning/jobs/${jobId}/samples?limit=1000${after ? `&after=${after}` : ""}`);
    out.push(...res.data);
    if (!res.has_more || !res.last_id) break;
    after = res.last_id;
  }
  return out;
}

// The server thins long runs to at most 1000 points per key: enough for a chart's width.
export async function fetchMetrics(jobId) {
  return (await api(`/v1/fine_tuning/jobs/${jobId}/metrics?max_points=1000`)).data;
}
