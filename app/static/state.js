/*
 * The conversation's state that several modules read. Each field says which module mainly
 * writes it (connection.js also resets `pending` and `awaitingResponse` when the conversation
 * ends or the socket drops; transcript.js resets `lastSeq` with the transcript). State private
 * to one concern (the socket and its timers, the sessions list, the tool cards' timings) lives
 * in that concern's module instead.
 */

export const state = {
  phase: 'disconnected', // connection.js: disconnected | connecting | connected | reconnecting
  sessionId: null, // connection.js (the session chosen), frames.js (the one session.ready names)
  model: null, // frames.js: from session.ready
  lastSeq: 0, // frames.js: highest stored-event seq rendered; resumes ask only for newer ones
  // connection.js, frames.js: the session is in the store (resumed, or picked from the list)
  sessionStored: false,
  pending: new Map(), // composer.js: client id -> {id, text, el}: sent (or to send), not yet acknowledged
  awaitingResponse: false, // frames.js: acknowledged a message, its response.started not yet here
  active: null, // transcript.js: {id, el, view, cancelling}: the response streaming now
  // frames.js: messages stored with `queued: true` whose answer has not started, oldest first,
  // as {el, note} (their bubble and its "queued" note)
  queued: [],
};

/**
 * An answer runs, or a message waits for its acknowledgement or its answer. While busy, what
 * Send does is the `while_busy` setting's (while-busy.js): by default it waits.
 */
export function isBusy() {
  return Boolean(state.active) || state.pending.size > 0 || state.awaitingResponse
    || state.queued.length > 0;
}
