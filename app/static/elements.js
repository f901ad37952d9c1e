/*
 * The page's elements, looked up once at start (index.html names them by data-testid or class).
 */

import { byTestId } from './dom.js';

export const ui = {};

/** Fills `ui`; call once the document is parsed. */
export function findElements() {
  Object.assign(ui, {
    status: byTestId('status'),
    connect: byTestId('connect'),
    disconnect: byTestId('disconnect'),
    newSession: byTestId('new-session'),
    sessionList: byTestId('session-list'),
    transcript: byTestId('transcript'),
    input: byTestId('message-input'),
    send: byTestId('send'),
    whileBusy: byTestId('while-busy'),
    cancel: byTestId('cancel'),
    error: byTestId('error'),
    tokenForm: byTestId('token-form'),
    tokenInput: byTestId('token-input'),
  });
  Object.assign(ui, {
    statusState: ui.status.querySelector('.status-state'),
    statusModel: ui.status.querySelector('.status-model'),
    errorText: ui.error.querySelector('.error-text'),
    errorDismiss: ui.error.querySelector('.error-dismiss'),
    sessionsNote: document.querySelector('.sessions-note'),
    sidebar: document.querySelector('.sidebar'),
    sidebarToggle: document.querySelector('.sidebar-toggle'),
    chatTitle: document.querySelector('.chat-title'),
    composer: document.querySelector('.composer'),
    hint: document.querySelector('.composer-hint'),
  });
}
