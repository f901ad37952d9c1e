/*
 * What the page shows about itself: the connection status in the top bar, which buttons can be
 * used, and the error banner.
 */

import { ui } from './elements.js';
import { state } from './state.js';
import { canSendNow, whileBusy } from './while-busy.js';

const BUSY_HINTS = {
  reject: 'Answering… press Esc or Cancel to stop it',
  enqueue: 'Answering… Send queues your message · Esc or Cancel stops the answer',
  interrupt: 'Answering… Send stops this answer and sends yours · Esc or Cancel stops it',
};

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
  // By default one message at a time: the server refuses a second one while a response runs.
  ui.send.disabled = !canSendNow();
  ui.hint.textContent = state.active
    ? BUSY_HINTS[whileBusy()]
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
