/*
 * Small DOM and formatting helpers of the page, with no state of their own.
 * Strings passed as children become Text nodes, so they are never parsed as HTML.
 */

/** Builds an element; string children become Text nodes, so they are never parsed as HTML. */
export function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'testid') node.dataset.testid = value;
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

export const byTestId = (id) => document.querySelector(`[data-testid="${id}"]`);

/** A Date from an ISO string or an epoch number; null when it is neither. */
export function parseTime(value) {
  if (value === null || value === undefined) return null;
  // Epoch numbers are accepted too: seconds when small, milliseconds otherwise.
  const date = typeof value === 'number' ? new Date(value < 1e12 ? value * 1000 : value) : new Date(value);
  return Number.isNaN(date.getTime()) ? null : date;
}

const RELATIVE_UNITS = [
  ['year', 31536000], ['month', 2592000], ['week', 604800],
  ['day', 86400], ['hour', 3600], ['minute', 60],
];
const relativeFormat = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });

function relativeTime(date) {
  const seconds = (date.getTime() - Date.now()) / 1000;
  for (const [unit, size] of RELATIVE_UNITS) {
    if (Math.abs(seconds) >= size) return relativeFormat.format(Math.round(seconds / size), unit);
  }
  return 'just now';
}

/** A <time> showing how long ago `date` was, with the full date on hover. */
export function timeElement(date) {
  return h('time', { datetime: date.toISOString(), title: date.toLocaleString() }, relativeTime(date));
}

/** JSON for people: indented, or the value as text when it cannot be serialized. */
export function prettyJson(value) {
  if (value === undefined) return 'not available';
  try {
    return JSON.stringify(value, null, 2);
  } catch (err) {
    return String(value);
  }
}

/** The first characters of an id, enough to tell sessions apart. */
export function shortId(id) {
  return String(id).slice(0, 8);
}

/** A client message id; randomUUID needs a secure context, getRandomValues does not. */
export function newClientId() {
  if (window.crypto && typeof window.crypto.randomUUID === 'function') return window.crypto.randomUUID();
  const bytes = window.crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40; // version 4
  bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
