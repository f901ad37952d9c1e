/*
 * The conversation on screen: the user's messages, the answers (streamed Markdown, markdown.js)
 * and the tool cards between them, kept scrolled to the end while the reader is there.
 * Everything from the user or the model goes in as text, never as HTML.
 */

import { updateControls } from './controls.js';
import { h, parseTime } from './dom.js';
import { ui } from './elements.js';
import { MarkdownStream } from './markdown.js';
import { state } from './state.js';
import {
  closeApprovalWithResult, forgetApprovals, showApprovalRequest,
} from './approvals.js';
import {
  completeToolCard, createToolCard, forgetToolCards, toolCardFor,
} from './tool-cards.js';

// ------------------------------------------------------------------ scrolling

/** True when the transcript is scrolled to (near) its end. */
function isPinned() {
  const box = ui.transcript;
  return box.scrollHeight - box.scrollTop - box.clientHeight < 48;
}

function scrollToEnd() {
  ui.transcript.scrollTop = ui.transcript.scrollHeight;
}

/** Runs a change to the transcript and keeps it scrolled to the end if it was there before. */
export function withAutoScroll(render, force = false) {
  const pinned = force || isPinned();
  render();
  if (pinned) scrollToEnd();
}

// ------------------------------------------------------------------ the user's messages

export function createUserBubble(text, { pending = false, seq, created_at: createdAt } = {}) {
  const bubble = h('article', {
    class: pending ? 'msg user pending' : 'msg user',
    testid: 'user-message',
    'data-state': pending ? 'pending' : 'sent',
    'aria-label': 'You',
  }, text);
  if (!pending) setSentDetails(bubble, seq, createdAt);
  return bubble;
}

/** A message the server stored (a live acknowledgement or a replayed event), at the end. */
export function appendUserMessage(frame) {
  const bubble = createUserBubble(frame.text, frame);
  withAutoScroll(() => ui.transcript.append(bubble));
  return bubble;
}

/** A message stored with `queued: true`: marked queued until its answer starts. */
export function markQueued(bubble) {
  bubble.dataset.state = 'queued';
  const note = h('div', { class: 'msg-note queued-note', testid: 'queued-note' },
    'Queued: answered once the answers before it are done');
  withAutoScroll(() => bubble.after(note));
  state.queued.push({ el: bubble, note });
}

/** The oldest queued message's answer starts: it is no longer queued. */
export function unqueueOldest() {
  const entry = state.queued.shift();
  if (!entry) return;
  entry.el.dataset.state = 'sent';
  entry.note.remove();
}

/** Messages still queued go after the answer that just started, as the model reads them. */
function moveQueuedToEnd() {
  for (const { el, note } of state.queued) ui.transcript.append(el, note);
}

/** Our pending message was stored: it is sent now. */
export function confirmUserBubble(bubble, frame) {
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

// ------------------------------------------------------------------ answers

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

/** A response started: its bubble streams from now on. */
export function startAnswer(responseId) {
  state.active = createAssistantBubble(responseId);
  withAutoScroll(moveQueuedToEnd);
  updateControls();
}

/** The bubble of the streaming response; a response whose start we missed still gets one. */
function activeBubbleFor(responseId) {
  if (!state.active || state.active.id !== responseId) startAnswer(responseId);
  return state.active;
}

/** More text of the streaming answer, rendered at the next animation frame. */
export function appendAnswerText(responseId, text) {
  const bubble = activeBubbleFor(responseId);
  const pinned = isPinned();
  bubble.view.append(text, () => { if (pinned) scrollToEnd(); });
}

/** Joins an answer that still runs (protocol 1.1 `live_response`): its text so far, then
 * its deltas follow. */
export function joinLiveAnswer(live) {
  dropPartialResponse();
  activeBubbleFor(live.response_id);
  if (live.text) appendAnswerText(live.response_id, live.text);
}

/** The answer of a response.done frame; it is no longer streaming. */
export function finishAnswer(frame) {
  withAutoScroll(() => finishAssistantBubble(activeBubbleFor(frame.response_id), frame));
  state.active = null;
  updateControls();
}

/** A stored answer (assistant.message of a replay). */
export function appendStoredAnswer(event) {
  finishAssistantBubble(createAssistantBubble(event.response_id), event);
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

/** Drops the partly streamed answer: its full text is stored and comes back on resume. */
export function dropPartialResponse() {
  if (state.active) state.active.el.remove();
  state.active = null;
}

// ------------------------------------------------------------------ tool cards

export function addToolCard(call, { timed = true } = {}) {
  const card = createToolCard(call, { timed });
  // Above the streaming answer, as in a replay, where tool events precede the stored answer.
  const anchor = state.active && state.active.id === call.response_id ? state.active.el : null;
  withAutoScroll(() => ui.transcript.insertBefore(card, anchor));
  return card;
}

export function fillToolCard(result) {
  // A result whose call this page never saw still gets a card, without a duration.
  const card = toolCardFor(result.call_id) || addToolCard(result, { timed: false });
  closeApprovalWithResult(result);
  completeToolCard(card, result);
}

/** A `tool.approval_requested` on its call's card (protocol 1.1); `pending`: it still waits
 * for an answer, so the card offers Approve / Deny. */
export function addApprovalRequest(request, { pending }) {
  const card = toolCardFor(request.call_id) || addToolCard(request);
  withAutoScroll(() => showApprovalRequest(card, request, { pending }));
}

// ------------------------------------------------------------------ emptying

/** Empties the transcript but keeps messages still waiting to be sent. */
export function clearTranscript() {
  forgetToolCards();
  forgetApprovals();
  state.queued = [];
  state.active = null;
  state.lastSeq = 0;
  ui.transcript.replaceChildren(...Array.from(state.pending.values(), (message) => message.el));
}
