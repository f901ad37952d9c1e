/*
 * What the page shows about itself: the connection status in the top bar, which buttons can be
 * used, and the error banner.
 */

import { ui } from './elements.js';
import { isBusy, state } from './state.js';

/** Shows the connection phase (with a detail such as "next try in 2 s") and the model. */
export function showStatus(phase, detail = '') {
  ui.status.dataset.state = phase;
  ui.statusState.textContent = detail ? `${phase} (${detail})` : phase;
  ui.statusModel.textContent = `model: ${state.model || 'not yet known'}`;
  updateControls();
}

export function updateControls() {
  const connected = state.phase === 'connected';
  ui.connect.disabled = state.phase !== 'disconnected';
  ui.disconnect.disabled = state.phase === 'disconnected';
  ui.cancel.disabled = !(connected && state.active && !state.active.cancelling);
  // One message at a time: the server refuses a second one while a response runs.
  ui.send.disabled = isBusy();
  ui.hint.textContent = state.active
    ? 'Answering… press Esc or Cancel to stop it'
    : 'Enter sends · Shift+Enter adds a new line';
}

export function showError(message, code = '') {
  ui.errorText.textContent = message;
  ui.error.dataset.code = code;
  ui.error.hidden = false;
}

export function hideError() {
  ui.error.hidden = true;
  ui.errorText.textContent = '';
  ui.error.dataset.code = '';
}
