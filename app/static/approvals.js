/*
 * Tool calls waiting for the person's approval (protocol 1.1): the approval panel inside the
 * call's tool card, with Approve / Deny (and an optional reason), the time left until
 * `expires_at`, and the outcome once the server acknowledges the answer or the call ends.
 * The card itself (name, arguments, result) is tool-cards.js's.
 */

import { h, parseTime } from './dom.js';

const REASON_MAX_CHARS = 500; // the protocol's limit on `tool.approval.reason`
const TICK_MS = 1000;

// call_id -> {card, panel, expiresAt (ms or null), state}; state is one of
// pending (buttons work) | sending (answer sent, no acknowledgement yet) | approved | denied |
// closed (the call ended or stopped waiting without an answer).
const approvals = new Map();
const inFlight = []; // call ids answered, oldest first, whose acknowledgement has not come
let ticker = 0;
// Sends a frame, false when not connected; app.js hands over connection.js's `sendFrame` (so
// this module, which transcript.js imports, does not import connection.js: no import cycle).
let sendFrame = () => false;

/** Sets how answers are sent. */
export function onApprovalAnswer(send) {
  sendFrame = send;
}

/** A `tool.approval_requested` (live, or replayed by session.ready) on its tool card;
 * `pending` false shows the request without buttons (answered, expired or cancelled). */
export function showApprovalRequest(card, request, { pending }) {
  const existing = approvals.get(request.call_id);
  if (existing) {
    setPending(existing, pending);
    return;
  }
  const entry = {
    card, panel: buildPanel(request), expiresAt: expiryTime(request), state: 'closed',
  };
  approvals.set(request.call_id, entry);
  card.querySelector('.tool-output').before(entry.panel);
  setPending(entry, pending);
}

/** The server stored an answer (`tool.approval` acknowledgement or replayed event). */
export function showApprovalAnswer(answer) {
  const entry = approvals.get(answer.call_id);
  dropInFlight(answer.call_id);
  if (!entry) return;
  entry.state = answer.approved ? 'approved' : 'denied';
  const words = answer.approved ? 'Approved' : `Denied${answer.reason ? `: ${answer.reason}` : ''}`;
  closePanel(entry, words);
}

/** The call's tool.result arrived: an approval still open ended without an answer. */
export function closeApprovalWithResult(result) {
  const entry = approvals.get(result.call_id);
  if (!entry || entry.state === 'approved' || entry.state === 'denied') return;
  dropInFlight(result.call_id);
  const error = String(result.error || '');
  let words = 'Not answered';
  if (error.includes('timed out')) words = 'Expired: not answered in time';
  else if (error === 'cancelled') words = 'Cancelled before an answer';
  closePanel(entry, words);
}

/** session.ready listed the calls still waiting: those get working buttons (again), every
 * other open one stops waiting. */
export function reconcileApprovals(pendingIds) {
  inFlight.length = 0;
  for (const [callId, entry] of approvals) {
    if (entry.state === 'pending' || entry.state === 'sending') setPending(entry, pendingIds.has(callId));
  }
}

/** An `approval_not_pending` error: the oldest answer in flight was refused; says so on its
 * card (false when no answer was in flight). */
export function onApprovalRefused() {
  const callId = inFlight.shift();
  const entry = callId && approvals.get(callId);
  if (!entry) return false;
  closePanel(entry, 'Not sent: this call is not waiting for an answer any more '
    + '(answered elsewhere, expired or cancelled).');
  entry.panel.dataset.refused = 'true';
  return true;
}

/** Forgets every approval (the transcript was emptied). */
export function forgetApprovals() {
  approvals.clear();
  inFlight.length = 0;
  stopTicker();
}

// ------------------------------------------------------------------ the panel

function buildPanel(request) {
  const reason = h('input', {
    type: 'text', class: 'approval-reason', testid: 'approval-reason',
    maxlength: REASON_MAX_CHARS, placeholder: 'Reason (optional)', 'aria-label': 'Reason for denying',
  });
  const approve = h('button', { type: 'button', class: 'button primary', testid: 'approve' }, 'Approve');
  const deny = h('button', { type: 'button', class: 'button', testid: 'deny' }, 'Deny');
  const panel = h('div', { class: 'approval', testid: 'approval', 'data-state': 'closed' },
    h('p', { class: 'approval-head' },
      h('span', { class: 'approval-status', testid: 'approval-status' }, 'Approval requested'),
      h('span', { class: 'approval-countdown', testid: 'approval-countdown' })),
    h('div', { class: 'approval-actions' }, approve, deny, reason),
    h('p', { class: 'approval-note', testid: 'approval-note', role: 'status' }));
  approve.addEventListener('click', () => answer(request.call_id, true));
  deny.addEventListener('click', () => answer(request.call_id, false, reason.value.trim()));
  return panel;
}

function setPending(entry, pending) {
  if (!pending) {
    if (entry.state === 'pending' || entry.state === 'sending') closePanel(entry, 'No longer waiting for an answer');
    return;
  }
  entry.state = 'pending';
  entry.panel.dataset.state = 'pending';
  entry.card.dataset.state = 'awaiting-approval';
  entry.card.open = true; // name, arguments and buttons in view
  entry.card.querySelector('.tool-state').textContent = 'awaiting approval';
  entry.panel.querySelector('.approval-status').textContent = 'Needs your approval';
  entry.panel.querySelector('.approval-actions').hidden = false;
  setButtonsEnabled(entry, true);
  updateCountdown(entry);
  startTicker();
}

function closePanel(entry, words) {
  entry.state = entry.state === 'approved' || entry.state === 'denied' ? entry.state : 'closed';
  entry.panel.dataset.state = entry.state;
  if (entry.card.dataset.state === 'awaiting-approval') {
    entry.card.dataset.state = 'running';
    entry.card.querySelector('.tool-state').textContent = 'running…';
  }
  entry.panel.querySelector('.approval-status').textContent = words;
  entry.panel.querySelector('.approval-countdown').textContent = '';
  entry.panel.querySelector('.approval-actions').hidden = true;
  entry.panel.querySelector('.approval-note').textContent = '';
}

function setButtonsEnabled(entry, enabled) {
  for (const control of entry.panel.querySelectorAll('.approval-actions button, .approval-actions input')) {
    control.disabled = !enabled;
  }
}

/** Sends the person's answer; the card waits for its acknowledgement. */
function answer(callId, approved, reason = '') {
  const entry = approvals.get(callId);
  if (!entry || entry.state !== 'pending') return;
  const frame = { type: 'tool.approval', call_id: callId, approved };
  if (!approved && reason) frame.reason = reason.slice(0, REASON_MAX_CHARS);
  const note = entry.panel.querySelector('.approval-note');
  if (!sendFrame(frame)) {
    note.textContent = 'Not connected: answer again once the page is connected.';
    return;
  }
  entry.state = 'sending';
  entry.panel.dataset.state = 'sending';
  note.textContent = approved ? 'Approving…' : 'Denying…';
  setButtonsEnabled(entry, false);
  inFlight.push(callId);
}

function dropInFlight(callId) {
  const index = inFlight.indexOf(callId);
  if (index >= 0) inFlight.splice(index, 1);
}

// ------------------------------------------------------------------ time left

function expiryTime(request) {
  const date = parseTime(request.expires_at);
  return date ? date.getTime() : null;
}

/** "4:59 left"; the browser's clock against the server's `expires_at`. */
function updateCountdown(entry) {
  const countdown = entry.panel.querySelector('.approval-countdown');
  if (entry.expiresAt === null) {
    countdown.textContent = '';
    return;
  }
  const seconds = Math.max(0, Math.ceil((entry.expiresAt - Date.now()) / 1000));
  countdown.textContent = seconds > 0
    ? `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, '0')} left`
    : 'time is up';
  // The server denies it as timed out now; its tool.result closes the panel.
  if (seconds === 0 && entry.state === 'pending') setButtonsEnabled(entry, false);
}

function tick() {
  let open = 0;
  for (const entry of approvals.values()) {
    if (entry.state !== 'pending' && entry.state !== 'sending') continue;
    open += 1;
    updateCountdown(entry);
  }
  if (open === 0) stopTicker();
}

function startTicker() {
  if (!ticker) ticker = setInterval(tick, TICK_MS);
}

function stopTicker() {
  clearInterval(ticker);
  ticker = 0;
}
