// The page's address lives in the URL's hash (#/path?query), so the app needs no server routes
// and a link or a reload shows the same view.

export function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/jobs";
  const [path, query = ""] = raw.split("?");
  return { path, params: new URLSearchParams(query) };
}

// Records a view's state (a filter, the jobs compared) in the address without re-rendering:
// replaceState fires no hashchange, and the history gets no entry per click.
export function setQuery(path, params) {
  const q = params.toString();
  history.replaceState(null, "", `#${path}${q ? `?${q}` : ""}`);
}
