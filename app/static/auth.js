/*
 * The access token, when the server's auth is on: from `?token=`, or entered in the token field
 * (kept for this tab only, so a reload does not ask again). It goes in `Authorization: Bearer`
 * on REST and in `?token=` on the WebSocket.
 */

import { hideError, showError } from './controls.js';
import { ui } from './elements.js';

const TOKEN_STORAGE_KEY = 'realtime-chat-token';

let authToken = new URLSearchParams(window.location.search).get('token') || storedToken();

function storedToken() {
  try {
    return window.sessionStorage.getItem(TOKEN_STORAGE_KEY);
  } catch (err) {
    return null; // storage disabled: the token lasts until the page is left
  }
}

function storeToken(token) {
  try {
    window.sessionStorage.setItem(TOKEN_STORAGE_KEY, token);
  } catch (err) {
    // storage disabled: see storedToken
  }
}

/** The token in use, or null when none was given. */
export function accessToken() {
  return authToken;
}

/** Headers for a REST request: the bearer token when there is one. */
export function authHeaders() {
  return authToken ? { Authorization: `Bearer ${authToken}` } : {};
}

/** Shows the token field; says so when the token in use was refused. */
export function askForToken() {
  const refused = Boolean(authToken);
  ui.tokenForm.hidden = false;
  ui.sessionsNote.textContent = 'This server needs an access token. Enter it above.';
  ui.sessionList.replaceChildren();
  if (refused) showError('That access token was not accepted. Check it and enter it again.', 'unauthorized');
  if (document.activeElement === document.body) ui.tokenInput.focus();
}

/** The server took the token (a REST call succeeded): the field is not needed. */
export function hideTokenForm() {
  ui.tokenForm.hidden = true;
}

/** Keeps the token entered in the field; `onToken` runs once it is in use. */
export function bindTokenForm(onToken) {
  ui.tokenForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const token = ui.tokenInput.value.trim();
    if (!token) {
      showError('Enter an access token first.');
      return;
    }
    authToken = token;
    storeToken(token);
    ui.tokenInput.value = '';
    hideError();
    onToken();
  });
}
