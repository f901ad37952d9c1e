/*
 * Browser page of the realtime conversation server (PROTOCOL.md, version 1).
 *
 * One WebSocket at /ws carries the conversation; /api/sessions lists past sessions.
 * Everything that comes from the user or the model goes into the page as text
 * (Text nodes, textContent, attribute values), never as HTML; answers are Markdown rendered
 * into DOM nodes by markdown.js.
 */

import {
  byTestId, h, newClientId, parseTime, prettyJson, shortId, timeElement,
} from './dom.js';
import { MarkdownStream } from './markdown.js';

// ------------------------------------------------------------------ settings

const PING_INTERVAL_MS = 25000;
// A half-open connection (laptop asleep, network gone) never fires `close`; when not even
// a `pong` arrives this long after a ping, the socket is treated as dropped.
const PONG_TIMEOUT_MS = 15000;
const RECONNECT_BASE_MS = 500;
const RECONNECT_MAX_MS = 15000;
const SESSION_LIST_LIMIT = 20;
// Summaries usually take a second or two: look soon, then less and less often.
const SUMMARY_POLL_FIRST_MS = 500;
const SUMMARY_POLL_MAX_MS = 5000;
const SUMMARY_POLL_MAX = 40;
const TOKEN_STORAGE_KEY = 'realtime-chat-token';
const INPUT_MAX_HEIGHT_PX = 200;

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

// `error` frames that refuse the user.message just sent: nothing was stored, so the message
// is marked "not sent" rather than left waiting for an acknowledgement that never comes.
const MESSAGE_REFUSALS = new Set([
  'message_too_large', 'response_in_progress', 'rate_limited', 'invalid_event', 'invalid_json',
  'usage_limit_exceeded',
]);

// `error` frames that mean "nothing stored yet, send the same message again shortly": the
// message stays pending and is resent with its id (the server stores it at most once).
const RESEND_LATER = new Set(['store_unavailable']);
const RESEND_BASE_MS = 1000;
const RESEND_MAX_MS = 10000;

// Plain words for an `error` frame that arrives without a message.
const ERROR_WORDS = {
  message_too_large: 'That message is too long.',
  response_in_progress: 'Wait for the current answer to finish before sending.',
  rate_limited: 'Too many messages; wait a moment and try again.',
  usage_limit_exceeded: 'Your usage limit is reached; try again once it resets.',
  session_busy: 'This session is already open elsewhere.',
  store_unavailable: 'The server cannot store messages right now; your message will be sent again.',
  session_not_found: 'That session does not exist.',
  unauthorized: 'Not authorized.',
  forbidden: 'Not allowed.',
};

// The access token when the server's auth is on: from `?token=`, or entered in the token field
// (kept for this tab only, so a reload does not ask again).
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

// ------------------------------------------------------------------ state

const state = {
  ws: null,
  phase: 'disconnected', // disconnected | connecting | connected | reconnecting
  socketErrorShown: false, // an `error` frame already explained the coming close
  sessionId: null,
  model: null,
  lastSeq: 0, // highest stored-event seq rendered; resumes ask only for newer ones
  sessionStored: false, // the session is in the store (resumed, or picked from the list)
  pending: new Map(), // client id -> {id, text, el}: sent (or to send), not yet acknowledged
  awaitingResponse: false, // acknowledged a message, its response.started not yet here
  active: null, // {id, el, text, cancelling}: the response streaming now
  toolCards: new Map(), // call_id -> <details> card
  toolStartedAt: new Map(), // call_id -> ms since the epoch, for the card's duration
  reconnectAttempt: 0,
  reconnectTimer: 0,
  pingTimer: 0,
  pongTimer: 0,
  sessions: [],
  sessionsTicket: 0,
  summaryPolls: 0,
  leftSessionId: null, // the session just left: its summary is worth waiting for
  leftSummary: null, // that session's summary when it was left; a new one ends the wait
  leftSummaryStarted: false, // its summary was seen being made
  summaryTimer: 0,
  resendAttempt: 0, // store_unavailable answers in a row: the next resend waits longer
  resendTimer: 0,
};

const ui = {};

// ------------------------------------------------------------------ transcript scrolling

/** True when the transcript is scrolled to (near) its end. */
function isPinned() {
  const box = ui.transcript;
  return box.scrollHeight - box.scrollTop - box.clientHeight < 48;
}

function scrollToEnd() {
  ui.transcript.scrollTop = ui.transcript.scrollHeight;
}

/** Runs a change to the transcript and keeps it scrolled to the end if it was there before. */
function withAutoScroll(render, force = false) {
  const pinned = force || isPinned();
  render();
  if (pinned) scrollToEnd();
}

// ------------------------------------------------------------------ status, controls, banner

function setPhase(phase, detail = '') {
  state.phase = phase;
  ui.status.dataset.state = phase;
  ui.statusState.textContent = detail ? `${phase} (${detail})` : phase;
  ui.statusModel.textContent = `model: ${state.model || 'not yet known'}`;
  updateControls();
}

function isBusy() {
  return Boolean(state.active) || state.pending.size > 0 || state.awaitingResponse;
}

function updateControls() {
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

function showError(message, code = '') {
  ui.errorText.textContent = message;
  ui.error.dataset.code = code;
  ui.error.hidden = false;
}

function hideError() {
  ui.error.hidden = true;
  ui.errorText.textContent = '';
  ui.error.dataset.code = '';
}

// ------------------------------------------------------------------ connection

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
  if (authToken) params.set('token', authToken);
  const query = params.toString();
  return `${scheme}//${window.location.host}/ws${query ? `?${query}` : ''}`;
}

/** Starts a connection: a new session, or the current one when a session id is known. */
function connect() {
  if (state.ws || state.phase !== 'disconnected') return;
  hideError();
  setPhase('connecting');
  openSocket();
}

function openSocket() {
  const sock = new WebSocket(socketUrl());
  let opened = false;
  state.ws = sock;
  state.socketErrorShown = false;
  // Each handler checks that its socket is still the current one: after a user close or
  // a session switch, late events of the old socket must not touch the new state.
  sock.addEventListener('open', () => { opened = true; });
  sock.addEventListener('message', (event) => {
    if (sock === state.ws) onSocketMessage(event.data);
  });
  sock.addEventListener('close', (event) => {
    if (sock !== state.ws) return;
    state.ws = null;
    onSocketLost(event.code, opened);
  });
}

/** The socket closed without the user asking for it: explain, or reconnect. */
function onSocketLost(code, opened) {
  stopPing();
  dropPartialResponse();
  state.awaitingResponse = false;
  refreshSessions();
  if (code in CLOSE_REASONS || (code >= 4400 && code <= 4499)) {
    const reason = CLOSE_REASONS[code] || `The server refused the connection (code ${code}).`;
    if (!state.socketErrorShown) showError(reason);
    if (code === 4401) askForToken();
    // The session is gone: the next Connect starts a new one instead of failing again.
    if (code === 4404) {
      state.sessionId = null;
      resetConversation({ keepError: true });
    }
    setPhase('disconnected');
  } else if (!opened && state.phase === 'connecting') {
    showError('Could not reach the server. Check that it is running, then press Connect.');
    setPhase('disconnected');
  } else {
    scheduleReconnect();
  }
}

function scheduleReconnect() {
  // Exponential backoff with jitter, so a restarting server is not hit by every tab at once.
  const ceiling = Math.min(RECONNECT_MAX_MS, RECONNECT_BASE_MS * 2 ** state.reconnectAttempt);
  const delay = Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
  state.reconnectAttempt += 1;
  setPhase('reconnecting', `next try in ${Math.ceil(delay / 1000)} s`);
  clearTimeout(state.reconnectTimer);
  state.reconnectTimer = setTimeout(reconnectNow, delay);
}

function reconnectNow() {
  clearTimeout(state.reconnectTimer);
  state.reconnectTimer = 0;
  if (state.phase !== 'reconnecting' || state.ws) return;
  setPhase('reconnecting', `attempt ${state.reconnectAttempt}`);
  openSocket();
}

/** Closes the socket on the user's behalf: no reconnect follows. */
function closeSocketByUser() {
  if (state.sessionId) leaveSession(state.sessionId);
  clearTimeout(state.reconnectTimer);
  state.reconnectTimer = 0;
  stopPing();
  const sock = state.ws;
  state.ws = null;
  if (sock) closeQuietly(sock);
  dropPartialResponse();
  state.awaitingResponse = false;
}

function closeQuietly(sock) {
  // Closing a socket that is still connecting makes the browser log an error; wait for it.
  if (sock.readyState === WebSocket.CONNECTING) sock.addEventListener('open', () => sock.close(1000));
  else if (sock.readyState === WebSocket.OPEN) sock.close(1000);
}

function disconnect() {
  closeSocketByUser();
  setPhase('disconnected');
  refreshSessions();
}

function sendFrame(frame) {
  const sock = state.ws;
  if (!sock || sock.readyState !== WebSocket.OPEN) return false;
  sock.send(JSON.stringify(frame));
  return true;
}

function startPing() {
  stopPing();
  state.pingTimer = setInterval(sendPing, PING_INTERVAL_MS);
}

function stopPing() {
  clearInterval(state.pingTimer);
  clearTimeout(state.pongTimer);
  state.pingTimer = 0;
  state.pongTimer = 0;
}

function sendPing() {
  if (!sendFrame({ type: 'ping' })) return;
  clearTimeout(state.pongTimer);
  state.pongTimer = setTimeout(onPongTimeout, PONG_TIMEOUT_MS);
}

function onPongTimeout() {
  const sock = state.ws;
  if (!sock) return;
  state.ws = null;
  closeQuietly(sock);
  onSocketLost(1006, true);
}

// ------------------------------------------------------------------ incoming frames

const FRAME_HANDLERS = {
  'session.ready': onSessionReady,
  'user.message': (frame) => onUserMessage(frame, false),
  'response.started': onResponseStarted,
  'response.delta': onResponseDelta,
  'tool.call': onToolCall,
  'tool.result': onToolResult,
  'response.done': onResponseDone,
  error: onErrorFrame,
  pong: () => {},
};

function onSocketMessage(data) {
  // Any frame at all proves the connection alive.
  clearTimeout(state.pongTimer);
  let frame;
  try {
    frame = JSON.parse(data);
  } catch (err) {
    return; // not a protocol frame; nothing sensible to show
  }
  const handler = frame && FRAME_HANDLERS[frame.type];
  if (handler) handler(frame); // unknown types come from a newer server: ignore them
}

/** Records a stored event's seq; false when it was already rendered (a duplicate). */
function claimSeq(seq) {
  if (typeof seq !== 'number') return true;
  if (seq <= state.lastSeq) return false;
  state.lastSeq = seq;
  return true;
}

function onSessionReady(frame) {
  // Asked to resume one session, got another: what is on screen belongs to the old one.
  if (state.sessionId && frame.session_id !== state.sessionId) clearTranscript();
  state.sessionId = frame.session_id;
  state.sessionStored = frame.resumed;
  if (state.leftSessionId === state.sessionId) state.leftSessionId = null;
  state.model = frame.model || state.model;
  state.reconnectAttempt = 0;
  state.awaitingResponse = false;
  const events = frame.events || [];
  const sentBefore = new Set(state.pending.keys());
  withAutoScroll(() => events.forEach(renderStoredEvent));
  // Our message was stored but never answered (its acknowledgement was lost, or the server
  // stopped first): sending it again is answered once, not stored twice.
  const last = events[events.length - 1];
  const live = frame.live_response;
  if (live) joinLiveResponse(live);
  else if (last && last.type === 'user.message' && sentBefore.has(last.id)) {
    sendFrame({ type: 'user.message', text: last.text, id: last.id });
  }
  setPhase('connected');
  markCurrentSession();
  updateChatTitle();
  startPing();
  resendPending();
  refreshSessions();
}

/** The answer runs still (protocol 1.1): its text so far, then its deltas follow. */
function joinLiveResponse(live) {
  dropPartialResponse();
  const bubble = activeBubbleFor(live.response_id);
  const pinned = isPinned();
  if (live.text) bubble.view.append(live.text, () => { if (pinned) scrollToEnd(); });
}

function renderStoredEvent(event) {
  if (event.type === 'user.message') {
    onUserMessage(event, true);
  } else if (event.type === 'tool.call') {
    onToolCall(event);
  } else if (event.type === 'tool.result') {
    onToolResult(event);
  } else if (event.type === 'assistant.message' && claimSeq(event.seq)) {
    finishAssistantBubble(createAssistantBubble(event.response_id), event);
  }
}

/** The acknowledgement of a sent message, a replayed stored message, or someone else's. */
function onUserMessage(frame, replayed) {
  const pending = state.pending.get(frame.id);
  const isNew = claimSeq(frame.seq);
  if (pending) {
    state.pending.delete(frame.id);
    confirmUserBubble(pending.el, frame);
  } else if (isNew) {
    withAutoScroll(() => ui.transcript.append(createUserBubble(frame.text, frame)));
  }
  // A fresh live acknowledgement is followed by its response; a repeated one (the server is
  // idempotent on ids) or a replayed event is not.
  if (isNew && !replayed) state.awaitingResponse = true;
  updateControls();
}

function onResponseStarted(frame) {
  state.awaitingResponse = false;
  state.active = createAssistantBubble(frame.response_id);
  updateControls();
}

function onResponseDelta(frame) {
  const bubble = activeBubbleFor(frame.response_id);
  // Rendered at the next animation frame, however many deltas arrive before it.
  const pinned = isPinned();
  bubble.view.append(frame.text, () => { if (pinned) scrollToEnd(); });
}

function onResponseDone(frame) {
  const isActive = state.active && state.active.id === frame.response_id;
  if (!claimSeq(frame.seq) && !isActive) return;
  withAutoScroll(() => finishAssistantBubble(activeBubbleFor(frame.response_id), frame));
  state.active = null;
  updateControls();
  refreshSessions(); // the list shows this session's new title and event count
}

/** The bubble of the streaming response; a response whose start we missed still gets one. */
function activeBubbleFor(responseId) {
  if (!state.active || state.active.id !== responseId) {
    state.active = createAssistantBubble(responseId);
    updateControls();
  }
  return state.active;
}

/** Drops the partly streamed answer: its full text is stored and comes back on resume. */
function dropPartialResponse() {
  if (state.active) state.active.el.remove();
  state.active = null;
}

function onToolCall(frame) {
  if (claimSeq(frame.seq)) addToolCard(frame);
}

function onToolResult(frame) {
  if (claimSeq(frame.seq)) fillToolCard(frame);
}

function onErrorFrame(frame) {
  state.socketErrorShown = true;
  showError(frame.message || ERROR_WORDS[frame.code] || 'Something went wrong.', frame.code || '');
  // Error frames carry no message id; only one message is ever in flight, so it is that one.
  const inFlight = state.pending.values().next().value;
  if (RESEND_LATER.has(frame.code) && inFlight) scheduleResend();
  else if (MESSAGE_REFUSALS.has(frame.code) && inFlight) {
    markNotSent(inFlight, frame.message || ERROR_WORDS[frame.code] || frame.code);
  }
}

/** The server stored nothing yet: send the pending messages again, waiting longer each time. */
function scheduleResend() {
  const ceiling = Math.min(RESEND_MAX_MS, RESEND_BASE_MS * 2 ** state.resendAttempt);
  state.resendAttempt += 1;
  clearTimeout(state.resendTimer);
  state.resendTimer = setTimeout(() => {
    state.resendTimer = 0;
    if (state.phase === 'connected') resendPending();
  }, Math.round(ceiling / 2 + (Math.random() * ceiling) / 2));
}

// ------------------------------------------------------------------ sending

function sendUserMessage() {
  const text = ui.input.value.trim();
  if (!text || isBusy()) return;
  hideError();
  const message = { id: newClientId(), text, el: createUserBubble(text, { pending: true }) };
  withAutoScroll(() => ui.transcript.append(message.el), true);
  state.pending.set(message.id, message);
  ui.input.value = '';
  resizeInput();
  deliver(message);
  updateControls();
}

/** Sends now when connected; otherwise connects, and session.ready sends it. */
function deliver(message) {
  if (state.phase === 'connected') sendFrame({ type: 'user.message', text: message.text, id: message.id });
  else if (state.phase === 'disconnected') connect();
}

/** After (re)connecting: the same ids again, so the server stores nothing twice. */
function resendPending() {
  for (const message of state.pending.values()) {
    sendFrame({ type: 'user.message', text: message.text, id: message.id });
  }
}

function markNotSent(message, reason) {
  state.pending.delete(message.id);
  message.el.classList.remove('pending');
  message.el.dataset.state = 'failed';
  const note = h('div', { class: 'msg-note' }, `Not sent: ${reason} `,
    h('button', { type: 'button', class: 'link-button', onclick: () => retry(message, note) }, 'Retry'));
  message.el.after(note);
  updateControls();
}

function retry(message, note) {
  if (isBusy()) {
    showError('Wait for the current answer to finish (or cancel it), then retry.');
    return;
  }
  hideError();
  note.remove();
  message.el.dataset.state = 'pending';
  message.el.classList.add('pending');
  state.pending.set(message.id, message);
  deliver(message);
  updateControls();
}

function cancelResponse() {
  if (!state.active || state.phase !== 'connected') return;
  if (sendFrame({ type: 'response.cancel' })) {
    state.active.cancelling = true;
    updateControls();
  }
}

// ------------------------------------------------------------------ transcript rendering

function createUserBubble(text, { pending = false, seq, created_at: createdAt } = {}) {
  const bubble = h('article', {
    class: pending ? 'msg user pending' : 'msg user',
    testid: 'user-message',
    'data-state': pending ? 'pending' : 'sent',
    'aria-label': 'You',
  }, text);
  if (!pending) setSentDetails(bubble, seq, createdAt);
  return bubble;
}

function confirmUserBubble(bubble, frame) {
  bubble.classList.remove('pending');
  bubble.dataset.state = 'sent';
  setSentDetails(bubble, frame.seq, frame.created_at);
  // Move it to the end: in a replay it belongs before the events that follow it.
  withAutoScroll(() => ui.transcript.append(bubble));
}

function setSentDetails(bubble, seq, createdAt) {
  if (seq !== undefined) bubble.dataset.seq = String(seq);
  const date = parseTime(createdAt);
  if (date) bubble.title = date.toLocaleString();
}

function createAssistantBubble(responseId) {
  const body = h('div', { class: 'msg-text markdown' });
  const el = h('article', {
    class: 'msg assistant streaming',
    testid: 'assistant-message',
    'data-response-id': responseId,
    'data-state': 'streaming',
    'aria-label': 'Assistant',
    'aria-busy': 'true',
  }, body);
  withAutoScroll(() => ui.transcript.append(el));
  return { id: responseId, el, view: new MarkdownStream(body), cancelling: false };
}

/** Final text and status of an answer, live (response.done) or stored (assistant.message). */
function finishAssistantBubble(bubble, { status, text, error }) {
  // The done text is the whole answer, so it wins over what the deltas built.
  bubble.view.finish(text);
  bubble.el.classList.remove('streaming');
  bubble.el.dataset.state = status || 'completed';
  bubble.el.setAttribute('aria-busy', 'false');
  const note = answerNote(status, error, text);
  if (note) bubble.el.append(h('div', { class: 'msg-status' }, note));
}

function answerNote(status, error, text) {
  if (status === 'cancelled') return 'Cancelled.';
  if (status === 'failed') {
    return `Failed: ${(error && error.message) || 'the answer could not be completed.'}`;
  }
  return text ? '' : 'No answer text.';
}

function addToolCard(call) {
  const card = buildToolCard(call);
  state.toolCards.set(call.call_id, card);
  // Stored events carry their time; a live tool.call is timed from its arrival.
  state.toolStartedAt.set(call.call_id, eventTime(call));
  // Above the streaming answer, as in a replay, where tool events precede the stored answer.
  const anchor = state.active && state.active.id === call.response_id ? state.active.el : null;
  withAutoScroll(() => ui.transcript.insertBefore(card, anchor));
  return card;
}

function buildToolCard(call) {
  const preview = call.arguments === undefined ? '' : JSON.stringify(call.arguments);
  const card = h('details',
    { class: 'tool-card', testid: 'tool-card', 'data-call-id': call.call_id, 'data-state': 'running' },
    h('summary', {},
      h('span', { class: 'tool-label' }, call.server ? 'MCP' : 'Tool'),
      // An MCP tool's card names its server (`tool.call.server`, absent for built-in tools).
      call.server ? h('span', { class: 'tool-server', testid: 'tool-server' }, call.server) : null,
      h('span', { class: 'tool-name' }, call.name || 'unknown'),
      h('span', { class: 'tool-preview' }, preview.length > 60 ? `${preview.slice(0, 59)}…` : preview),
      h('span', { class: 'tool-state' }, 'running…')),
    h('div', { class: 'tool-body' },
      h('h3', {}, 'Arguments'),
      h('pre', { class: 'tool-args' }, prettyJson(call.arguments))));
  if (typeof call.raw_arguments === 'string') {
    card.lastChild.append(h('h3', {}, 'Raw arguments (not a JSON object)'),
      h('pre', { class: 'tool-raw' }, call.raw_arguments));
  }
  card.lastChild.append(h('div', { class: 'tool-output' }));
  return card;
}

function fillToolCard(result) {
  // A result whose call this page never saw still gets a card, without a duration.
  let card = state.toolCards.get(result.call_id);
  if (!card) {
    card = addToolCard(result);
    state.toolStartedAt.delete(result.call_id);
  }
  const failed = !result.ok;
  card.dataset.state = failed ? 'failed' : 'ok';
  const label = result.error === 'cancelled' ? 'cancelled' : 'failed';
  const duration = toolDuration(result);
  card.querySelector('.tool-state').textContent = `${failed ? label : 'done'}${duration}`;
  const body = failed
    ? String(result.error || 'the tool failed')
    : (typeof result.result === 'string' ? result.result : prettyJson(result.result));
  card.querySelector('.tool-output').replaceChildren(
    h('h3', {}, failed ? 'Error' : 'Result'),
    h('pre', { class: failed ? 'tool-error' : 'tool-result' }, body));
}

function eventTime(frame) {
  const date = parseTime(frame.created_at);
  return date ? date.getTime() : Date.now();
}

/** " · 1.2 s" from the tool's call to its result, or "" when the start is unknown. */
function toolDuration(result) {
  const started = state.toolStartedAt.get(result.call_id);
  if (started === undefined) return '';
  const ms = Math.max(0, eventTime(result) - started);
  return ms < 1000 ? ` · ${Math.round(ms)} ms` : ` · ${(ms / 1000).toFixed(1)} s`;
}

/** Empties the transcript but keeps messages still waiting to be sent. */
function clearTranscript() {
  state.toolCards.clear();
  state.toolStartedAt.clear();
  state.active = null;
  state.lastSeq = 0;
  ui.transcript.replaceChildren(...Array.from(state.pending.values(), (message) => message.el));
}

function resetConversation({ keepError = false } = {}) {
  state.pending.clear();
  state.awaitingResponse = false;
  clearTranscript();
  if (!keepError) hideError();
  updateChatTitle();
}

// ------------------------------------------------------------------ past sessions

async function refreshSessions({ fromPoll = false } = {}) {
  if (!fromPoll) state.summaryPolls = 0;
  const ticket = ++state.sessionsTicket;
  try {
    const headers = authToken ? { Authorization: `Bearer ${authToken}` } : {};
    const response = await fetch(`/api/sessions?limit=${SESSION_LIST_LIMIT}`, { headers, cache: 'no-store' });
    if (ticket !== state.sessionsTicket) return; // a newer refresh is under way
    // The server's auth is on: this is how the page learns that it needs a token.
    if (response.status === 401) {
      askForToken();
      return;
    }
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const body = await response.json();
    if (ticket !== state.sessionsTicket) return;
    ui.tokenForm.hidden = true;
    renderSessions(Array.isArray(body.sessions) ? body.sessions : []);
  } catch (err) {
    if (ticket === state.sessionsTicket) ui.sessionsNote.textContent = 'Past sessions could not be loaded.';
  }
}

function renderSessions(sessions) {
  state.sessions = sessions;
  ui.sessionsNote.textContent = sessions.length ? '' : 'No past sessions yet.';
  ui.sessionList.replaceChildren(...sessions.map(sessionItem));
  markCurrentSession();
  updateChatTitle();
  scheduleSummaryPoll(sessions);
}

function isSummarizing(session) {
  return session.summary_status === 'pending' || session.summary_status === 'running';
}

/** Remembers the session just left: its new summary is awaited in the list. */
function leaveSession(sessionId) {
  const known = state.sessions.find((session) => session.id === sessionId);
  state.leftSessionId = sessionId;
  state.leftSummary = known ? known.summary : null;
  state.leftSummaryStarted = false;
}

/** A summary is on its way: being made, or the session was just left and its summary has not
 * started yet (the server marks it pending once the last response is stored, a moment after the
 * socket closed, while the session already shows idle). */
function awaitsSummary(session) {
  const left = session.id === state.leftSessionId;
  if (isSummarizing(session)) {
    if (left) state.leftSummaryStarted = true;
    return true;
  }
  const renewed = session.summary !== state.leftSummary;
  return left && !state.leftSummaryStarted && !renewed && Number(session.event_count) > 0;
}

/** Summaries appear a little after a session is left; look again while any is being made. */
function scheduleSummaryPoll(sessions) {
  clearTimeout(state.summaryTimer);
  if (!sessions.some(awaitsSummary) || state.summaryPolls >= SUMMARY_POLL_MAX) return;
  const delay = Math.min(SUMMARY_POLL_MAX_MS, SUMMARY_POLL_FIRST_MS * 1.5 ** state.summaryPolls);
  state.summaryPolls += 1;
  state.summaryTimer = setTimeout(() => refreshSessions({ fromPoll: true }), delay);
}

// ------------------------------------------------------------------ access token

/** Shows the token field; says so when the token in use was refused. */
function askForToken() {
  const refused = Boolean(authToken);
  ui.tokenForm.hidden = false;
  ui.sessionsNote.textContent = 'This server needs an access token. Enter it above.';
  ui.sessionList.replaceChildren();
  if (refused) showError('That access token was not accepted. Check it and enter it again.', 'unauthorized');
  if (document.activeElement === document.body) ui.tokenInput.focus();
}

function onTokenSubmit(event) {
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
  refreshSessions();
}

function sessionTitle(session) {
  if (session.title) return session.title;
  const created = parseTime(session.created_at);
  return created ? `${shortId(session.id)} · ${created.toLocaleString()}` : `Session ${shortId(session.id)}`;
}

function sessionItem(session) {
  const updated = parseTime(session.updated_at) || parseTime(session.created_at);
  const count = Number(session.event_count) || 0;
  let about = null;
  if (isSummarizing(session)) about = h('span', { class: 'session-summary summarizing' }, 'summarizing…');
  else if (session.summary) {
    about = h('span', { class: 'session-summary', title: session.summary }, session.summary);
  }
  const button = h('button', {
    type: 'button',
    class: 'session-item',
    testid: 'session-item',
    'data-session-id': session.id,
    onclick: () => switchSession(session.id),
  },
  h('span', { class: 'session-title' }, sessionTitle(session)),
  h('span', { class: 'session-meta' },
    updated ? timeElement(updated) : null,
    `${updated ? ' · ' : ''}${count} event${count === 1 ? '' : 's'}`,
    session.status === 'active' ? ' · open now' : ''),
  about);
  return h('li', {}, button);
}

function markCurrentSession() {
  for (const item of ui.sessionList.querySelectorAll('.session-item')) {
    if (item.dataset.sessionId === state.sessionId) item.setAttribute('aria-current', 'true');
    else item.removeAttribute('aria-current');
  }
}

function updateChatTitle() {
  const session = state.sessions.find((s) => s.id === state.sessionId);
  if (session) ui.chatTitle.textContent = sessionTitle(session);
  else if (state.sessionId) ui.chatTitle.textContent = `Session ${shortId(state.sessionId)}`;
  else ui.chatTitle.textContent = 'New conversation';
}

/** Leaves the current session (the server finishes and stores any running answer) for another. */
function switchSession(sessionId) {
  closeSocketByUser();
  setPhase('disconnected');
  resetConversation();
  state.sessionId = sessionId;
  state.sessionStored = sessionId !== null;
  markCurrentSession();
  updateChatTitle();
  connect();
}

function startNewSession() {
  switchSession(null);
  ui.input.focus();
}

// ------------------------------------------------------------------ input and wiring

function onInputKeydown(event) {
  // isComposing / 229: this Enter confirms an input-method candidate, it is not a send.
  const composing = event.isComposing || event.keyCode === 229;
  if (event.key === 'Enter' && !event.shiftKey && !composing) {
    event.preventDefault();
    sendUserMessage();
  } else if (event.key === 'Escape' && state.active) {
    event.preventDefault();
    cancelResponse();
  }
}

function resizeInput() {
  ui.input.style.height = 'auto';
  ui.input.style.height = `${Math.min(ui.input.scrollHeight, INPUT_MAX_HEIGHT_PX)}px`;
}

function toggleSidebar() {
  const expanded = ui.sidebarToggle.getAttribute('aria-expanded') === 'true';
  ui.sidebarToggle.setAttribute('aria-expanded', String(!expanded));
  ui.sidebarToggle.textContent = expanded ? 'Show' : 'Hide';
  ui.sidebar.classList.toggle('collapsed', expanded);
}

/** Back online or back in view: retry at once instead of waiting out the backoff. */
function retrySoon() {
  if (state.phase === 'reconnecting' && state.reconnectTimer) reconnectNow();
}

function init() {
  Object.assign(ui, {
    status: byTestId('status'),
    connect: byTestId('connect'),
    disconnect: byTestId('disconnect'),
    newSession: byTestId('new-session'),
    sessionList: byTestId('session-list'),
    transcript: byTestId('transcript'),
    input: byTestId('message-input'),
    send: byTestId('send'),
    cancel: byTestId('cancel'),
    error: byTestId('error'),
    tokenForm: byTestId('token-form'),
    tokenInput: byTestId('token-input'),
  });
  Object.assign(ui, {
    statusState: ui.status.querySelector('.status-state'),
    statusModel: ui.status.querySelector('.status-model'),
    errorText: ui.error.querySelector('.error-text'),
    sessionsNote: document.querySelector('.sessions-note'),
    sidebar: document.querySelector('.sidebar'),
    sidebarToggle: document.querySelector('.sidebar-toggle'),
    chatTitle: document.querySelector('.chat-title'),
    hint: document.querySelector('.composer-hint'),
  });

  ui.connect.addEventListener('click', connect);
  ui.disconnect.addEventListener('click', disconnect);
  ui.newSession.addEventListener('click', startNewSession);
  ui.cancel.addEventListener('click', cancelResponse);
  ui.error.querySelector('.error-dismiss').addEventListener('click', hideError);
  ui.sidebarToggle.addEventListener('click', toggleSidebar);
  ui.tokenForm.addEventListener('submit', onTokenSubmit);
  ui.input.addEventListener('keydown', onInputKeydown);
  ui.input.addEventListener('input', resizeInput);
  document.querySelector('.composer').addEventListener('submit', (event) => {
    event.preventDefault();
    sendUserMessage();
    ui.input.focus();
  });
  window.addEventListener('online', retrySoon);
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') retrySoon();
  });

  setPhase('disconnected');
  refreshSessions();
}

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
else init();
