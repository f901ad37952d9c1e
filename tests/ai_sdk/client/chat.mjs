// Drives the server's AI SDK endpoints with the real `ai` package, as `useChat` would.
//
//   node chat.mjs --server http://127.0.0.1:8000 --chat my-chat --transport http|ws \
//     --action send|regenerate|stop|resume|reconnect [--text "..."] [--mode chat|stream]
//     [--stop-endpoint] [--no-message-id]        (token: --token or AI_CLIENT_TOKEN)
//
// Actions:
//   send        send --text, read the answer to its end.
//   regenerate  load the stored messages (GET /api/chat/{id}/messages, as useChat's initial
//               messages) and regenerate the last assistant message (messageId = its id, or
//               none with --no-message-id, as a bare `regenerate()` sends).
//   stop        send --text, stop the chat (useChat `stop()`: aborts the request) at the first
//               text delta; with --stop-endpoint, then POST /api/chat/{id}/stop.
//   resume      send --text, drop the connection at the first text delta (http: the fetch is
//               aborted; ws: the socket is closed), then, as after a reload, a fresh transport
//               and chat with the stored messages resume the stream.
//   reconnect   a fresh chat resumes the chat's stream (null when nothing runs).
// --mode stream skips the chat and reads the transport's stream with readUIMessageStream
// directly (send only): it reads every chunk, where the chat stops at an `error` chunk.
//
// Stdout: JSON lines. `{"mark": name}` when a step is reached (`aborted`, `dropped`,
// `reconnected`) so the test can act then; the last line is `{"result": {...}}`. Exit status 1
// when the server broke the protocol (see `protocolErrors` in the result), 2 on bad arguments.
import { parseArgs } from 'node:util';
import { readUIMessageStream } from 'ai';
import {
  endingOf,
  makeTransport,
  NodeChat,
  readRecorded,
  RecordingTransport,
} from './node-chat.mjs';

const ACTIONS = { send, regenerate, stop, resume, reconnect };

function options() {
  const { values } = parseArgs({
    options: {
      server: { type: 'string' },
      chat: { type: 'string' },
      transport: { type: 'string', default: 'http' },
      action: { type: 'string', default: 'send' },
      text: { type: 'string', default: '' },
      mode: { type: 'string', default: 'chat' },
      token: { type: 'string', default: process.env.AI_CLIENT_TOKEN ?? '' },
      'stop-endpoint': { type: 'boolean', default: false },
      'no-message-id': { type: 'boolean', default: false },
    },
  });
  if (!values.server || !values.chat || !(values.action in ACTIONS)) {
    const actions = Object.keys(ACTIONS).join('|');
    throw new UsageError(`needs --server, --chat and --action (${actions})`);
  }
  if (!['http', 'ws'].includes(values.transport) || !['chat', 'stream'].includes(values.mode)) {
    throw new UsageError('--transport is http or ws, --mode chat or stream');
  }
  return values;
}

class UsageError extends Error {}

function mark(name) {
  process.stdout.write(`${JSON.stringify({ mark: name })}\n`);
}

/** A promise and its resolver, for "when this chunk comes". */
function signal() {
  let resolve;
  const promise = new Promise(done => {
    resolve = done;
  });
  return { promise, resolve };
}

/**
 * One chat of the run: a NodeChat over a recording transport. `firstDelta` resolves at the
 * first text delta; `reconnected` when reconnectToStream answered (with the stream or null).
 */
function openChat(run, { messages = [] } = {}) {
  const firstDelta = signal();
  const reconnected = signal();
  const inner = makeTransport(run.transport, run);
  const transport = new RecordingTransport(inner, {
    onChunk: chunk => chunk.type === 'text-delta' && firstDelta.resolve(),
    onReconnect: stream => reconnected.resolve(stream),
  });
  const chat = new NodeChat({ id: run.chat, transport, messages });
  const entry = { chat, transport, firstDelta, reconnected, interrupted: false };
  run.chats.push(entry);
  return entry;
}

async function loadMessages(run) {
  const response = await fetch(`${run.server}/api/chat/${encodeURIComponent(run.chat)}/messages`, {
    headers: run.token ? { authorization: `Bearer ${run.token}` } : {},
  });
  if (!response.ok) throw new Error(`GET messages: ${response.status} ${await response.text()}`);
  return response.json();
}

async function send(run) {
  if (run.mode === 'stream') return sendAndRead(run);
  const { chat } = openChat(run);
  await chat.sendMessage({ text: run.text });
}

/** The transport alone, as `useChat` drives it, and readUIMessageStream over every chunk. */
async function sendAndRead(run) {
  const { chat, transport } = openChat(run);
  const text = { type: 'text', text: run.text };
  const userMessage = { id: chat.generateId(), role: 'user', parts: [text] };
  const stream = await transport.sendMessages({
    trigger: 'submit-message',
    chatId: run.chat,
    messageId: undefined,
    messages: [userMessage],
    abortSignal: undefined,
  });
  const errors = [];
  const onError = error => errors.push(String(error?.message ?? error));
  let message = null;
  for await (const state of readUIMessageStream({ stream, onError })) message = state;
  run.streamRead = { message, errors };
}

async function regenerate(run) {
  const { chat } = openChat(run, { messages: await loadMessages(run) });
  const last = chat.messages.findLast(message => message.role === 'assistant');
  if (last === undefined) throw new Error('no assistant message to regenerate');
  await chat.regenerate(run['no-message-id'] ? {} : { messageId: last.id });
}

async function stop(run) {
  const entry = openChat(run);
  const sending = entry.chat.sendMessage({ text: run.text });
  await entry.firstDelta.promise;
  entry.interrupted = true;
  await entry.chat.stop();
  await sending;
  mark('aborted');
  if (run['stop-endpoint']) run.stopAnswer = await postStop(run);
}

async function postStop(run) {
  const response = await fetch(`${run.server}/api/chat/${encodeURIComponent(run.chat)}/stop`, {
    method: 'POST',
    headers: run.token ? { authorization: `Bearer ${run.token}` } : {},
  });
  return { status: response.status, body: await response.json().catch(() => null) };
}

async function resume(run) {
  const first = openChat(run);
  const sending = first.chat.sendMessage({ text: run.text });
  await first.firstDelta.promise;
  first.interrupted = true;
  // A dropped connection, not a stop: a fetch abort is only a disconnect on HTTP, while on the
  // WebSocket an abort frame would cancel the answer, so there the socket is closed instead.
  if (run.transport === 'http') await first.chat.stop();
  else first.transport.close();
  await sending;
  mark('dropped');
  await reconnectWith(run, await loadMessages(run));
}

async function reconnect(run) {
  await reconnectWith(run, await loadMessages(run));
}

async function reconnectWith(run, messages) {
  const second = openChat(run, { messages });
  const resuming = second.chat.resumeStream();
  // The test opens the gate of a held answer once the stream is back.
  const stream = await Promise.race([second.reconnected.promise, resuming.then(() => null)]);
  if (stream !== null) mark('reconnected');
  await resuming;
}

/** What the server did wrong, as the `ai` package saw it. */
function protocolErrors(run) {
  const errors = [];
  for (const [index, { chat, transport, interrupted }] of run.chats.entries()) {
    const explained = interrupted || transport.requests.some(r => endingOf(r) === 'error');
    if (chat.status === 'error' && !explained) {
      errors.push(`chat ${index}: ${chat.error?.message ?? chat.error}`);
    }
    for (const request of transport.requests) {
      if (!interrupted && request.closed && endingOf(request) === 'none') {
        const what = `a ${request.trigger} stream closed without finish, abort or error`;
        errors.push(`chat ${index}: ${what}`);
      }
    }
  }
  return errors;
}

async function describeChat({ chat, transport, interrupted }, index) {
  const requests = [];
  for (const request of transport.requests) {
    const read = await readRecorded(request);
    const ending = endingOf(request);
    requests.push({ ...request, ending, message: read.message, streamErrors: read.errors });
  }
  return {
    index,
    status: chat.status,
    error: chat.error ? String(chat.error.message ?? chat.error) : null,
    interrupted,
    messages: chat.messages,
    requests,
  };
}

async function main() {
  let run;
  try {
    run = { ...options(), chats: [] };
  } catch (error) {
    process.stderr.write(`${error.message}\n`);
    return 2;
  }
  const failures = [];
  try {
    await ACTIONS[run.action](run);
  } catch (error) {
    failures.push(`${run.action} threw: ${error?.stack ?? error}`);
  }
  failures.push(...protocolErrors(run));
  const chats = await Promise.all(run.chats.map(describeChat));
  for (const { transport } of run.chats) transport.close();
  const result = {
    action: run.action,
    transport: run.transport,
    chatId: run.chat,
    chats,
    stop: run.stopAnswer ?? null,
    streamRead: run.streamRead ?? null,
    protocolErrors: failures,
  };
  process.stdout.write(`${JSON.stringify({ result })}\n`);
  return failures.length === 0 ? 0 : 1;
}

process.exitCode = await main();
