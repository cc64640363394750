// Times and durations as the pages show them. Timestamps are the API's: seconds since the epoch.

export function ago(ts) {
  if (!ts) return "–";
  const s = Math.max(0, Date.now() / 1000 - ts);
  if (s < 60) return `${Math.floor(s)}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

export function duration(sec) {
  if (sec === null || sec === undefined || sec < 0) return "–";
  if (sec < 60) return `${Math.round(sec)}s`;
  if (sec < 3600) return `${Math.floor(sec / 60)}m ${Math.round(sec % 60)}s`;
  return `${Math.floor(sec / 3600)}h ${Math.floor((sec % 3600) / 60)}m`;
}

export const fullDate = (ts) => (ts ? new Date(ts * 1000).toLocaleString() : "");
export const clock = (ts) => new Date(ts * 1000).toLocaleTimeString([], { hour12: false });
export const timeOfDay = (ts) => new Date(ts * 1000).toLocaleTimeString();
