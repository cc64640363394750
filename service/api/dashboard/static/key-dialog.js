// The API key dialog: asked for when the service answers 401, or opened from the top bar.

import { $ } from "./dom.js";
import { forgetKey, saveKey, storedKey } from "./api.js";

const WHERE_KEPT = "kept in this browser only (localStorage) and sent as 'Authorization: Bearer …' with every request.";
const REASONS = {
  missing: `This service requires an API key. It is ${WHERE_KEPT}`,
  invalid: "The service refused the stored API key. Enter a valid key; it is kept in this browser only.",
  manual: `The key is ${WHERE_KEPT}`,
};

export function askForKey(reason = "missing") {
  const dialog = $("#key-dialog");
  if (dialog.open) return;  // several requests fail at once: one dialog
  $("#key-reason").textContent = REASONS[reason] || REASONS.missing;
  $("#key-input").value = "";
  dialog.showModal();
  $("#key-input").focus();
}

const showKeyState = () => { $("#key-button").textContent = storedKey() ? "API key ✓" : "API key"; };

// onKeyChange: called after the key was saved or forgotten (the view reloads with it).
export function setupKeyDialog(onKeyChange) {
  $("#key-button").addEventListener("click", () => askForKey("manual"));
  $("#key-form").addEventListener("submit", (ev) => {
    const value = $("#key-input").value.trim();
    if (!value) { ev.preventDefault(); return; }
    saveKey(value);
    showKeyState();
    onKeyChange();
  });
  $("#key-clear").addEventListener("click", () => {
    forgetKey();
    $("#key-dialog").close();
    showKeyState();
    onKeyChange();
  });
  showKeyState();
}
