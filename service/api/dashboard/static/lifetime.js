// A page's lifetime: what it starts (timers, polls, streams) it registers here, and leaving the
// page stops all of it, so a page left behind never keeps polling or drawing into a detached view.

let cleanups = [];

export const onLeave = (fn) => cleanups.push(fn);

export function leavePage() {
  const pending = cleanups;
  cleanups = [];
  pending.forEach((fn) => fn());
}

// Runs fn now and every `ms` after it settles, until the page changes. A failed tick is logged
// and the next one tries again: a poll that throws once must not stop for good. (401s are not
// logged: the key dialog already says what is wrong.)
export function every(ms, fn) {
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

// fn at most once per quiet `ms`, however often the returned function is called; errors ignored
// (the page's polls retry anyway).
export function debounced(fn, ms) {
  let timer = null;
  onLeave(() => clearTimeout(timer));
  return () => { clearTimeout(timer); timer = setTimeout(() => fn().catch(() => {}), ms); };
}
