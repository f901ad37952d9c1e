/*
 * The WebSocket at /ws (docs/protocol.md): connecting, the phase shown in the top bar, pings, and
 * reconnecting with backoff after a drop. A reconnect resumes the session with `session_id` and
 * `after_seq`; frames.js handles what arrives (session.ready replays, resends and joins).
 */

import { accessToken, askForToken } from './auth.js';
import { hideError, showError, showStatus } from './controls.js';
import {
  leaveSession, markCurrentSession, refreshSessions, updateChatTitle,
} from './sessions.js';
import { state } from './state.js';
import { clearTranscript, dropPartialResponse } from './transcript.js';

const PING_INTERVAL_MS = 25000;
// A half-open connection (laptop asleep, network gone) never fires `close`; when not even
// a `pong` arrives this long after a ping, the socket is treated as dropped.
const PONG_TIMEOUT_MS = 15000;
const RECONNECT_BASE_MS = 500;
const RECONNECT_MAX_MS = 15000;

// Why the server refused us; reconnecting after these would only be refused again.
const CLOSE_REASONS = {
  1008: 'Disconnected for sending too many messages too quickly.',
  1009: 'Disconnected because a message was too large.',
  4400: 'The server refused the connection as an invalid request.',
  4401: 'Not authorized: the server needs a valid token.',
  4403: 'The server does not allow this page or session.',
  4404: 'That session does not exist any more.',
  4409: 'This session is already open in another tab or window.',
};

const socket = {
  ws: null,
  closeExplained: false, // an `error` frame already explained the coming close
  reconnectAttempt: 0,
  reconnectTimer: 0,
  pingTimer: 0,
  pongTimer: 0,
};

let handleFrame = () => {};

/** `handler(frame)` gets every parsed frame of the current socket. */
export function onFrame(handler) {
  handleFrame = handler;
}

function setPhase(phase, detail = '') {
  state.phase = phase;
  showStatus(phase, detail);
}

function socketUrl() {
  const scheme = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
  const params = new URLSearchParams();
  // A session is stored with its first message: one that never spoke cannot be resumed, so a
  // reconnect before then starts afresh.
  if (state.sessionId && (state.sessionStored || state.lastSeq > 0)) {
    params.set('session_id', state.sessionId);
    if (state.lastSeq > 0) params.set('after_seq', String(state.lastSeq));
  }
  // Browsers cannot set headers on a WebSocket, so the token travels in the query.
  const token = accessToken();
  if (token) params.set('token', token);
  const query = params.toString();
  return `${scheme}//${window.location.host}/ws${query ? `?${query}` : ''}`;
}

/** Starts a connection: a new session, or the current one when a session id is known. */
export function connect() {
  if (socket.ws || state.phase !== 'disconnected') return;
  hideError();
  setPhase('connecting');
  openSocket();
}

function openSocket() {
  const sock = new WebSocket(socketUrl());
  let opened = false;
  socket.ws = sock;
  socket.closeExplained = false;
  // Each handler checks that its socket is still the current one: after a user close or
  // a session switch, late events of the old socket must not touch the new state.
  sock.addEventListener('open', () => { opened = true; });
  sock.addEventListener('message', (event) => {
    if (sock === socket.ws) onSocketMessage(event.data);
  });
  sock.addEventListener('close', (event) => {
    if (sock !== socket.ws) return;
    socket.ws = null;
    onSocketLost(event.code, opened);
  });
}

function onSocketMessage(data) {
  // Any frame at all proves the connection alive.
  clearTimeout(socket.pongTimer);
  let frame;
  try {
    frame = JSON.parse(data);
  } catch (err) {
    return; // not a protocol frame; nothing sensible to show
  }
  if (frame) handleFrame(frame);
}

/** session.ready arrived: the connection is up, and the backoff starts again from the first step. */
export function connectionReady() {
  socket.reconnectAttempt = 0;
  setPhase('connected');
  startPing();
}

/** An `error` frame explained why the server closes next: the close adds no second message. */
export function noteCloseExplained() {
  socket.closeExplained = true;
}

/** The socket closed without the user asking for it: explain, or reconnect. */
function onSocketLost(code, opened) {
  stopPing();
  dropPartialResponse();
  state.awaitingResponse = false;
  refreshSessions();
  if (code in CLOSE_REASONS || (code >= 4400 && code <= 4499)) {
    explainRefusal(code);
    setPhase('disconnected');
  } else if (!opened && state.phase === 'connecting') {
    showError('Could not reach the server. Check that it is running, then press Connect.');
    setPhase('disconnected');
  } else {
    scheduleReconnect();
  }
}

/** The server refused us for good (a 4xxx code or a policy close); say why. */
function explainRefusal(code) {
  const reason = CLOSE_REASONS[code] || `The server refused the connection (code ${code}).`;
  if (!socket.closeExplained) showError(reason);
  if (code === 4401) askForToken();
  // The session is gone: the next Connect starts a new one instead of failing again.
  if (code === 4404) {
    state.sessionId = null;
    resetConversation({ keepError: true });
  }
}

function scheduleReconnect() {
  // Exponential backoff with jitter, so a restarting server is not hit by every tab at once.
  const ceiling = Math.min(RECONNECT_MAX_MS, RECONNECT_BASE_MS * 2 ** socket.reconnectAttempt);
  const delay = Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
  socket.reconnectAttempt += 1;
  setPhase('reconnecting', `next try in ${Math.ceil(delay / 1000)} s`);
  clearTimeout(socket.reconnectTimer);
  socket.reconnectTimer = setTimeout(reconnectNow, delay);
}

function reconnectNow() {
  clearTimeout(socket.reconnectTimer);
  socket.reconnectTimer = 0;
  if (state.phase !== 'reconnecting' || socket.ws) return;
  setPhase('reconnecting', `attempt ${socket.reconnectAttempt}`);
  openSocket();
}

/** Back online or back in view: retry at once instead of waiting out the backoff. */
export function retrySoon() {
  if (state.phase === 'reconnecting' && socket.reconnectTimer) reconnectNow();
}

/** Closes the socket on the user's behalf: no reconnect follows. */
function closeSocketByUser() {
  if (state.sessionId) leaveSession(state.sessionId);
  clearTimeout(socket.reconnectTimer);
  socket.reconnectTimer = 0;
  stopPing();
  const sock = socket.ws;
  socket.ws = null;
  if (sock) closeQuietly(sock);
  dropPartialResponse();
  state.awaitingResponse = false;
}

function closeQuietly(sock) {
  // Closing a socket that is still connecting makes the browser log an error; wait for it.
  if (sock.readyState === WebSocket.CONNECTING) sock.addEventListener('open', () => sock.close(1000));
  else if (sock.readyState === WebSocket.OPEN) sock.close(1000);
}

export function disconnect() {
  closeSocketByUser();
  setPhase('disconnected');
  refreshSessions();
}

/** Sends a frame when the socket is open; false when it is not (nothing is sent). */
export function sendFrame(frame) {
  const sock = socket.ws;
  if (!sock || sock.readyState !== WebSocket.OPEN) return false;
  sock.send(JSON.stringify(frame));
  return true;
}

function startPing() {
  stopPing();
  socket.pingTimer = setInterval(sendPing, PING_INTERVAL_MS);
}

function stopPing() {
  clearInterval(socket.pingTimer);
  clearTimeout(socket.pongTimer);
  socket.pingTimer = 0;
  socket.pongTimer = 0;
}

function sendPing() {
  if (!sendFrame({ type: 'ping' })) return;
  clearTimeout(socket.pongTimer);
  socket.pongTimer = setTimeout(onPongTimeout, PONG_TIMEOUT_MS);
}

function onPongTimeout() {
  const sock = socket.ws;
  if (!sock) return;
  socket.ws = null;
  closeQuietly(sock);
  onSocketLost(1006, true);
}

// ------------------------------------------------------------------ choosing a session

function resetConversation({ keepError = false } = {}) {
  state.pending.clear();
  state.awaitingResponse = false;
  clearTranscript();
  if (!keepError) hideError();
  updateChatTitle();
}

/** Leaves the current session (the server finishes and stores any running answer) for another;
 * null starts a new session. */
export function switchSession(sessionId) {
  closeSocketByUser();
  setPhase('disconnected');
  resetConversation();
  state.sessionId = sessionId;
  state.sessionStored = sessionId !== null;
  markCurrentSession();
  updateChatTitle();
  connect();
}
