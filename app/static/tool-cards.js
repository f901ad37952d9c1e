/*
 * Tool calls as collapsible cards: name (and, for an MCP tool, its server), arguments, result or
 * error, and how long the tool took. Cards are built here; transcript.js places them.
 * The card's `data-state`: running, awaiting-approval (approvals.js adds the approval panel),
 * ok, failed.
 */

import { h, parseTime, prettyJson } from './dom.js';

const cards = new Map(); // call_id -> <details> card
const startedAt = new Map(); // call_id -> ms since the epoch, for the card's duration

/** A card for `call` (a tool.call frame or event), remembered by its call_id. */
export function createToolCard(call, { timed = true } = {}) {
  const card = buildToolCard(call);
  cards.set(call.call_id, card);
  // Stored events carry their time; a live tool.call is timed from its arrival.
  if (timed) startedAt.set(call.call_id, eventTime(call));
  return card;
}

export function toolCardFor(callId) {
  return cards.get(callId);
}

/** Forgets every card (the transcript was emptied). */
export function forgetToolCards() {
  cards.clear();
  startedAt.clear();
}

function buildToolCard(call) {
  const card = h('details',
    { class: 'tool-card', testid: 'tool-card', 'data-call-id': call.call_id, 'data-state': 'running' },
    toolSummary(call),
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

/** The card's always visible line: label, server, name, arguments in short, state. */
function toolSummary(call) {
  const preview = call.arguments === undefined ? '' : JSON.stringify(call.arguments);
  return h('summary', {},
    h('span', { class: 'tool-label' }, call.server ? 'MCP' : 'Tool'),
    // An MCP tool's card names its server (`tool.call.server`, absent for built-in tools).
    call.server ? h('span', { class: 'tool-server', testid: 'tool-server' }, call.server) : null,
    h('span', { class: 'tool-name' }, call.name || 'unknown'),
    h('span', { class: 'tool-preview' }, preview.length > 60 ? `${preview.slice(0, 59)}…` : preview),
    h('span', { class: 'tool-state' }, 'running…'));
}

/** Shows a tool.result on its card: done or failed (or cancelled), the output, the duration. */
export function completeToolCard(card, result) {
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
  const started = startedAt.get(result.call_id);
  if (started === undefined) return '';
  const ms = Math.max(0, eventTime(result) - started);
  return ms < 1000 ? ` · ${Math.round(ms)} ms` : ` · ${(ms / 1000).toFixed(1)} s`;
}
