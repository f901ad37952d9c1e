// What the page needs from this server: the page settings from the URL, the chat transport, and
// the two plain HTTP calls useChat does not make itself (initial messages, stop).
import { DefaultChatTransport, WebSocketChatTransport, generateId } from 'ai';

/** The settings of this page, from its URL: `?chat=<id>&transport=http|ws&token=<token>`. */
export function readSettings() {
  const url = new URL(window.location.href);
  let chatId = url.searchParams.get('chat');
  if (!chatId) {
    chatId = generateId();
    url.searchParams.set('chat', chatId);
    // The id goes into the URL so that a reload continues (and resumes) the same chat.
    window.history.replaceState(null, '', url);
  }
  return {
    chatId,
    transport: url.searchParams.get('transport') === 'ws' ? 'ws' : 'http',
    token: url.searchParams.get('token'),
  };
}

function authHeaders(token) {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

/** One transport for the page: HTTP + SSE (useChat's default) or one WebSocket for all turns. */
export function createTransport({ transport, token }) {
  if (transport === 'ws') {
    // A browser cannot set headers on a WebSocket handshake: the token goes in the query.
    return new WebSocketChatTransport({
      url: '/api/chat/ws',
      params: token ? { token } : {},
    });
  }
  return new DefaultChatTransport({ api: '/api/chat', headers: authHeaders(token) });
}

function chatUrl(chatId, action) {
  return `/api/chat/${encodeURIComponent(chatId)}/${action}`;
}

/** The stored conversation as UIMessages (`[]` for a new chat): useChat's initial messages. */
export async function loadMessages({ chatId, token }) {
  const response = await fetch(chatUrl(chatId, 'messages'), { headers: authHeaders(token) });
  if (!response.ok) {
    throw new Error(`loading the chat failed: HTTP ${response.status}`);
  }
  return response.json();
}

/** Cancel the running answer on the server. Over HTTP, useChat's stop() only aborts the fetch,
 * which the server takes as a disconnect (the answer goes on, so that a reload can resume it). */
export async function stopOnServer({ chatId, token }) {
  await fetch(chatUrl(chatId, 'stop'), { method: 'POST', headers: authHeaders(token) });
}
