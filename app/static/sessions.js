/*
 * The list of past sessions (GET /api/sessions) in the sidebar, and the chat's title.
 * After a session is left, the list looks again until that session's summary is made.
 */

import { askForToken, authHeaders, hideTokenForm } from './auth.js';
import { h, parseTime, shortId, timeElement } from './dom.js';
import { ui } from './elements.js';
import { state } from './state.js';

const SESSION_LIST_LIMIT = 20;
// Summaries usually take a second or two: look soon, then less and less often.
const SUMMARY_POLL_FIRST_MS = 500;
const SUMMARY_POLL_MAX_MS = 5000;
const SUMMARY_POLL_MAX = 40;

const list = {
  sessions: [],
  ticket: 0, // the newest refresh; an older one's answer is dropped
  summaryPolls: 0,
  summaryTimer: 0,
  leftSessionId: null, // the session just left: its summary is worth waiting for
  leftSummary: null, // that session's summary when it was left; a new one ends the wait
  leftSummaryStarted: false, // its summary was seen being made
};

let chooseSession = () => {};

/** `handler(sessionId)` runs when the user picks a session in the list. */
export function onSessionChosen(handler) {
  chooseSession = handler;
}

export async function refreshSessions({ fromPoll = false } = {}) {
  if (!fromPoll) list.summaryPolls = 0;
  const ticket = ++list.ticket;
  try {
    const url = `/api/sessions?limit=${SESSION_LIST_LIMIT}`;
    const response = await fetch(url, { headers: authHeaders(), cache: 'no-store' });
    if (ticket !== list.ticket) return; // a newer refresh is under way
    // The server's auth is on: this is how the page learns that it needs a token.
    if (response.status === 401) {
      askForToken();
      return;
    }
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const body = await response.json();
    if (ticket !== list.ticket) return;
    hideTokenForm();
    renderSessions(Array.isArray(body.sessions) ? body.sessions : []);
  } catch (err) {
    if (ticket === list.ticket) ui.sessionsNote.textContent = 'Past sessions could not be loaded.';
  }
}

function renderSessions(sessions) {
  list.sessions = sessions;
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
export function leaveSession(sessionId) {
  const known = list.sessions.find((session) => session.id === sessionId);
  list.leftSessionId = sessionId;
  list.leftSummary = known ? known.summary : null;
  list.leftSummaryStarted = false;
}

/** The session left before is open again: its summary is no longer awaited. */
export function rejoinSession(sessionId) {
  if (list.leftSessionId === sessionId) list.leftSessionId = null;
}

/** A summary is on its way: being made, or the session was just left and its summary has not
 * started yet (the server marks it pending once the last response is stored, a moment after the
 * socket closed, while the session already shows idle). */
function awaitsSummary(session) {
  const left = session.id === list.leftSessionId;
  if (isSummarizing(session)) {
    if (left) list.leftSummaryStarted = true;
    return true;
  }
  const renewed = session.summary !== list.leftSummary;
  return left && !list.leftSummaryStarted && !renewed && Number(session.event_count) > 0;
}

/** Summaries appear a little after a session is left; look again while any is being made. */
function scheduleSummaryPoll(sessions) {
  clearTimeout(list.summaryTimer);
  if (!sessions.some(awaitsSummary) || list.summaryPolls >= SUMMARY_POLL_MAX) return;
  const delay = Math.min(SUMMARY_POLL_MAX_MS, SUMMARY_POLL_FIRST_MS * 1.5 ** list.summaryPolls);
  list.summaryPolls += 1;
  list.summaryTimer = setTimeout(() => refreshSessions({ fromPoll: true }), delay);
}

function sessionTitle(session) {
  if (session.title) return session.title;
  const created = parseTime(session.created_at);
  return created ? `${shortId(session.id)} · ${created.toLocaleString()}` : `Session ${shortId(session.id)}`;
}

function sessionItem(session) {
  const updated = parseTime(session.updated_at) || parseTime(session.created_at);
  const count = Number(session.event_count) || 0;
  const button = h('button', {
    type: 'button',
    class: 'session-item',
    testid: 'session-item',
    'data-session-id': session.id,
    onclick: () => chooseSession(session.id),
  },
  h('span', { class: 'session-title' }, sessionTitle(session)),
  h('span', { class: 'session-meta' },
    updated ? timeElement(updated) : null,
    `${updated ? ' · ' : ''}${count} event${count === 1 ? '' : 's'}`,
    session.status === 'active' ? ' · open now' : ''),
  sessionAbout(session));
  return h('li', {}, button);
}

/** The session's summary, "summarizing…" while it is made, or null. */
function sessionAbout(session) {
  if (isSummarizing(session)) return h('span', { class: 'session-summary summarizing' }, 'summarizing…');
  if (!session.summary) return null;
  return h('span', { class: 'session-summary', title: session.summary }, session.summary);
}

/** Marks the open session in the list. */
export function markCurrentSession() {
  for (const item of ui.sessionList.querySelectorAll('.session-item')) {
    if (item.dataset.sessionId === state.sessionId) item.setAttribute('aria-current', 'true');
    else item.removeAttribute('aria-current');
  }
}

export function updateChatTitle() {
  const session = list.sessions.find((s) => s.id === state.sessionId);
  if (session) ui.chatTitle.textContent = sessionTitle(session);
  else if (state.sessionId) ui.chatTitle.textContent = `Session ${shortId(state.sessionId)}`;
  else ui.chatTitle.textContent = 'New conversation';
}
