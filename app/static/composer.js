/*
 * What the user sends: the message field, Send and Cancel, and our messages until the server
 * acknowledges them (pending, resent with the same id after a reconnect or a store outage, or
 * marked "Not sent" when refused).
 *
 * While an answer runs, what Send does is the `while_busy` setting (while-busy.js): by default
 * Send is disabled; "queue" or "interrupt" send the message with that `while_busy`.
 */

import { connect, sendFrame } from './connection.js';
import { hideError, showError, updateControls } from './controls.js';
import { h, newClientId } from './dom.js';
import { ui } from './elements.js';
import { state } from './state.js';
import { confirmUserBubble, createUserBubble, withAutoScroll } from './transcript.js';
import { canSendNow, whileBusy } from './while-busy.js';

const INPUT_MAX_HEIGHT_PX = 200;

// `error` frames that refuse the user.message just sent: nothing was stored, so the message
// is marked "not sent" rather than left waiting for an acknowledgement that never comes.
const MESSAGE_REFUSALS = new Set([
  'message_too_large', 'response_in_progress', 'rate_limited', 'invalid_event', 'invalid_json',
  'usage_limit_exceeded', 'queue_full',
]);

// `error` frames that mean "nothing stored yet, send the same message again shortly": the
// message stays pending and is resent with its id (the server stores it at most once).
const RESEND_LATER = new Set(['store_unavailable']);
const RESEND_BASE_MS = 1000;
const RESEND_MAX_MS = 10000;

const resend = {
  attempt: 0, // store_unavailable answers in a row: the next resend waits longer
  timer: 0,
};

function sendUserMessage() {
  const text = ui.input.value.trim();
  if (!text || !canSendNow()) return;
  hideError();
  const message = {
    id: newClientId(), text, whileBusy: whileBusy(), el: createUserBubble(text, { pending: true }),
  };
  withAutoScroll(() => ui.transcript.append(message.el), true);
  state.pending.set(message.id, message);
  ui.input.value = '';
  resizeInput();
  deliver(message);
  updateControls();
}

function sendMessageFrame(message) {
  const frame = { type: 'user.message', text: message.text, id: message.id };
  // `reject` is the server's default: version 1's frame, unchanged.
  if (message.whileBusy && message.whileBusy !== 'reject') frame.while_busy = message.whileBusy;
  sendFrame(frame);
}

/** Sends now when connected; otherwise connects, and session.ready sends it. */
function deliver(message) {
  if (state.phase === 'connected') sendMessageFrame(message);
  else if (state.phase === 'disconnected') connect();
}

/** After (re)connecting: the same ids again, so the server stores nothing twice. */
export function resendPending() {
  for (const message of state.pending.values()) sendMessageFrame(message);
}

/** A stored message of ours whose acknowledgement was lost: sent again, answered once. */
export function resendStored(event) {
  sendMessageFrame(event);
}

/** The server stored our pending message `frame.id`: its bubble, or null when it is not ours. */
export function acknowledgeMessage(frame) {
  const message = state.pending.get(frame.id);
  if (!message) return null;
  state.pending.delete(frame.id);
  resend.attempt = 0; // the outage is over: the next one starts again from the shortest wait
  confirmUserBubble(message.el, frame);
  return message.el;
}

/** A message of ours is on its way to interrupt the running answer: that answer's end is
 * the interruption, and messages queued before keep waiting. */
export function interruptPending() {
  return Array.from(state.pending.values()).some((message) => message.whileBusy === 'interrupt');
}

/** An `error` frame: resend the message in flight later, or mark it not sent (`reason`). */
export function onMessageError(code, reason) {
  // Error frames carry no message id; the server answers frames in order, so it is the oldest
  // message still waiting for its acknowledgement.
  const inFlight = state.pending.values().next().value;
  if (!inFlight) return;
  if (RESEND_LATER.has(code)) scheduleResend();
  else if (MESSAGE_REFUSALS.has(code)) markNotSent(inFlight, reason);
}

/** The server stored nothing yet: send the pending messages again, waiting longer each time. */
function scheduleResend() {
  const ceiling = Math.min(RESEND_MAX_MS, RESEND_BASE_MS * 2 ** resend.attempt);
  resend.attempt += 1;
  clearTimeout(resend.timer);
  resend.timer = setTimeout(() => {
    resend.timer = 0;
    if (state.phase === 'connected') resendPending();
  }, Math.round(ceiling / 2 + (Math.random() * ceiling) / 2));
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
  if (!canSendNow()) {
    showError('Wait for the current answer to finish (or cancel it), then retry.');
    return;
  }
  hideError();
  note.remove();
  message.el.dataset.state = 'pending';
  message.el.classList.add('pending');
  message.whileBusy = whileBusy();
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

/** Wires the message field, Send (the form's submit) and Cancel. */
export function bindComposer() {
  ui.cancel.addEventListener('click', cancelResponse);
  ui.input.addEventListener('keydown', onInputKeydown);
  ui.input.addEventListener('input', resizeInput);
  ui.composer.addEventListener('submit', (event) => {
    event.preventDefault();
    sendUserMessage();
    ui.input.focus();
  });
}
