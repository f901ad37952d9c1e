/*
 * Browser page of the realtime conversation server (PROTOCOL.md): wires the modules together.
 *
 * One WebSocket at /ws carries the conversation (connection.js, frames.js); /api/sessions lists
 * past sessions (sessions.js). Everything that comes from the user or the model goes into the
 * page as text (Text nodes, textContent, attribute values), never as HTML; answers are Markdown
 * rendered into DOM nodes by markdown.js. docs/page.md says which module does what.
 */

import { onApprovalAnswer } from './approvals.js';
import { bindTokenForm } from './auth.js';
import { bindComposer } from './composer.js';
import {
  connect, disconnect, onFrame, retrySoon, sendFrame, switchSession,
} from './connection.js';
import { hideError, showStatus, updateControls } from './controls.js';
import { findElements, ui } from './elements.js';
import { handleFrame } from './frames.js';
import { onSessionChosen, refreshSessions } from './sessions.js';
import { state } from './state.js';
import { bindWhileBusySetting } from './while-busy.js';

function startNewSession() {
  switchSession(null);
  ui.input.focus();
}

function toggleSidebar() {
  const expanded = ui.sidebarToggle.getAttribute('aria-expanded') === 'true';
  ui.sidebarToggle.setAttribute('aria-expanded', String(!expanded));
  ui.sidebarToggle.textContent = expanded ? 'Show' : 'Hide';
  ui.sidebar.classList.toggle('collapsed', expanded);
}

function bindTopBarAndSidebar() {
  ui.connect.addEventListener('click', connect);
  ui.disconnect.addEventListener('click', disconnect);
  ui.newSession.addEventListener('click', startNewSession);
  ui.errorDismiss.addEventListener('click', hideError);
  ui.sidebarToggle.addEventListener('click', toggleSidebar);
}

/** Back online or back in view: a reconnect waiting out its backoff tries at once. */
function bindRetrySoon() {
  window.addEventListener('online', retrySoon);
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') retrySoon();
  });
}

function init() {
  findElements();
  onFrame(handleFrame);
  onApprovalAnswer(sendFrame);
  onSessionChosen(switchSession);
  bindTopBarAndSidebar();
  bindTokenForm(refreshSessions);
  bindComposer();
  bindWhileBusySetting(updateControls);
  bindRetrySoon();
  showStatus(state.phase);
  refreshSessions();
}

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
else init();
