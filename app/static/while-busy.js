/*
 * The page's setting for what Send does while an answer runs (protocol 1.1 `while_busy`):
 * wait (Send is disabled until the answer ends: version 1's behaviour, the default), queue the
 * message (answered after the running answer, in order) or interrupt the answer (it ends as
 * cancelled, then the new message is answered). Kept in `localStorage`.
 */

import { ui } from './elements.js';
import { isBusy } from './state.js';

const STORAGE_KEY = 'realtime-chat.while-busy';
const CHOICES = new Set(['reject', 'enqueue', 'interrupt']);
const DEFAULT_CHOICE = 'reject';

/** The chosen `while_busy`: reject | enqueue | interrupt. */
export function whileBusy() {
  const value = ui.whileBusy.value;
  return CHOICES.has(value) ? value : DEFAULT_CHOICE;
}

/** Send may be used now: nothing runs, or the setting says what a message does meanwhile. */
export function canSendNow() {
  return !isBusy() || whileBusy() !== 'reject';
}

function storedChoice() {
  try {
    const value = window.localStorage.getItem(STORAGE_KEY);
    return CHOICES.has(value) ? value : DEFAULT_CHOICE;
  } catch (err) {
    return DEFAULT_CHOICE; // storage blocked (privacy settings): the default for this visit
  }
}

function storeChoice(value) {
  try {
    window.localStorage.setItem(STORAGE_KEY, value);
  } catch (err) {
    // Storage blocked: the choice holds until the page is left.
  }
}

/** Shows the stored choice; `onChange()` runs when the user picks another. */
export function bindWhileBusySetting(onChange) {
  ui.whileBusy.value = storedChoice();
  ui.whileBusy.addEventListener('change', () => {
    storeChoice(whileBusy());
    onChange();
  });
}
