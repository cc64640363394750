// Building DOM nodes without a framework: h(tag, attrs, ...children), a query shorthand, toasts.

// attrs: `onX` adds a listener, `class` and `dataset` set those, the rest are attributes; null,
// undefined and false leave one out, so callers can write `hidden: !shown`. Children are nodes or
// text, never parsed as HTML: job ids, messages and file lines come from users.
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

export const $ = (sel, root = document) => root.querySelector(sel);

export function toast(message, kind = "") {
  const t = h("div", { class: `toast ${kind}`, role: "status" }, message);
  document.body.appendChild(t);
  setTimeout(() => t.remove(), 5000);
}
