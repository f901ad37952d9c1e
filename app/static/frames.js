/*
 * Frames from the server (docs/protocol.md), each to its handler. Stored events carry a `seq`
 * and are shown at most once; session.ready replays the stored events after `after_seq`, joins
 * an answer that still runs, and sends again what the server has not acknowledged.
 * A new frame type is one more entry in FRAME_HANDLERS and, when it is stored, in
 * renderStoredEvent (as 1.1's approval frames are).
 */

import { onApprovalRefused, reconcileApprovals, showApprovalAnswer } from './approvals.js';
import {
  acknowledgeMessage, interruptPending, onMessageError, resendPending, resendStored,
} from './composer.js';
import { connectionReady, noteCloseExplained } from './connection.js';
import { showError, updateControls } from './controls.js';
import {
  markCurrentSession, refreshSessions, rejoinSession, updateChatTitle,
} from './sessions.js';
import { state } from './state.js';
import {
  addApprovalRequest, addToolCard, appendAnswerText, appendStoredAnswer, appendUserMessage,
  clearTranscript, fillToolCard, finishAnswer, joinLiveAnswer, markQueued, startAnswer,
  unqueueOldest, withAutoScroll,
} from './transcript.js';

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
  queue_full: 'Too many messages are already queued; wait for an answer, then send again.',
  approval_not_pending: 'That tool call is not waiting for an answer any more.',
};

// The stored answer of a response stopped by a server shutdown while approvals wait: the
// queue still waits for those approvals.
const AWAITING_APPROVAL = 'awaiting_approval';

// session.ready's `pending_approvals` while its events are replayed: the calls still open.
let replayPending = new Set();

const FRAME_HANDLERS = {
  'session.ready': onSessionReady,
  'user.message': (frame) => onUserMessage(frame, false),
  'response.started': onResponseStarted,
  'response.delta': onResponseDelta,
  'tool.call': onToolCall,
  'tool.result': onToolResult,
  'tool.approval_requested': (frame) => onApprovalRequested(frame, true),
  'tool.approval': onApprovalAnswered,
  'response.done': onResponseDone,
  error: onErrorFrame,
  pong: () => {},
};

/** Handles one parsed frame; unknown types come from a newer server and are ignored. */
export function handleFrame(frame) {
  const handler = FRAME_HANDLERS[frame.type];
  if (handler) handler(frame);
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
  rejoinSession(state.sessionId);
  state.model = frame.model || state.model;
  state.awaitingResponse = false;
  const sentBefore = new Set(state.pending.keys());
  const events = frame.events || [];
  replayPending = new Set(frame.pending_approvals || []);
  withAutoScroll(() => events.forEach(renderStoredEvent));
  reconcileApprovals(replayPending);
  if (frame.live_response) joinLiveAnswer(frame.live_response);
  else resendUnanswered(events[events.length - 1], sentBefore);
  connectionReady();
  markCurrentSession();
  updateChatTitle();
  resendPending();
  refreshSessions();
}

/** Our message was stored but never answered (its acknowledgement was lost, or the server
 * stopped first): sending it again is answered once, not stored twice. */
function resendUnanswered(last, sentBefore) {
  if (last && last.type === 'user.message' && sentBefore.has(last.id)) resendStored(last);
}

function renderStoredEvent(event) {
  if (event.type === 'user.message') {
    onUserMessage(event, true);
  } else if (event.type === 'tool.call') {
    onToolCall(event);
  } else if (event.type === 'tool.result') {
    onToolResult(event);
  } else if (event.type === 'tool.approval_requested') {
    onApprovalRequested(event, replayPending.has(event.call_id));
  } else if (event.type === 'tool.approval') {
    onApprovalAnswered(event);
  } else if (event.type === 'assistant.message' && claimSeq(event.seq)) {
    appendStoredAnswer(event);
    if (event.finish_reason !== AWAITING_APPROVAL) unqueueOldest();
  }
}

/** The acknowledgement of a sent message, a replayed stored message, or someone else's. */
function onUserMessage(frame, replayed) {
  const isNew = claimSeq(frame.seq);
  let bubble = acknowledgeMessage(frame);
  if (!bubble && isNew) bubble = appendUserMessage(frame);
  // A queued message waits for the answers before it (they end in onResponseDone).
  if (isNew && bubble && frame.queued) markQueued(bubble);
  // A fresh live acknowledgement is followed by its response; a repeated one (the server is
  // idempotent on ids), a queued one or a replayed event is not.
  else if (isNew && !replayed) state.awaitingResponse = true;
  updateControls();
}

function onResponseStarted(frame) {
  state.awaitingResponse = false;
  startAnswer(frame.response_id);
}

function onResponseDelta(frame) {
  appendAnswerText(frame.response_id, frame.text);
}

function onResponseDone(frame) {
  const isActive = state.active && state.active.id === frame.response_id;
  if (!claimSeq(frame.seq) && !isActive) return;
  finishAnswer(frame);
  // The oldest queued message is answered next, unless a message of ours interrupted this
  // answer (it goes first) or the answer stopped with approvals still open.
  if (state.queued.length > 0 && !interruptPending() && frame.finish_reason !== AWAITING_APPROVAL) {
    unqueueOldest();
    state.awaitingResponse = true;
  }
  refreshSessions(); // the list shows this session's new title and event count
}

function onToolCall(frame) {
  if (claimSeq(frame.seq)) addToolCard(frame);
}

function onToolResult(frame) {
  if (claimSeq(frame.seq)) fillToolCard(frame);
}

/** A call waits for the person's answer; `pending`: live, or listed in pending_approvals. */
function onApprovalRequested(frame, pending) {
  if (claimSeq(frame.seq)) addApprovalRequest(frame, { pending });
}

/** The acknowledgement of an answer (ours), or a replayed one. */
function onApprovalAnswered(frame) {
  if (claimSeq(frame.seq)) showApprovalAnswer(frame);
}

function onErrorFrame(frame) {
  noteCloseExplained();
  const words = frame.message || ERROR_WORDS[frame.code];
  // A refused approval answer is explained on its card.
  if (frame.code === 'approval_not_pending' && onApprovalRefused()) return;
  showError(words || 'Something went wrong.', frame.code || '');
  onMessageError(frame.code, words || frame.code);
}
