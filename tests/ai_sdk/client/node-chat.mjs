// The `ai` package's own chat machinery, outside any UI framework: `AbstractChat` (what
// `useChat` wraps) over an in-memory state, and its two transports, each wrapped so that the
// test sees every UI message chunk the server sent.
import {
  AbstractChat,
  DefaultChatTransport,
  readUIMessageStream,
  WebSocketChatTransport,
} from 'ai';
import WebSocket from 'ws';

/** The chat state React's `useChat` keeps in hooks, kept in plain fields. */
class MemoryChatState {
  constructor(messages = []) {
    this.status = 'ready';
    this.error = undefined;
    this.messages = messages;
  }

  pushMessage = message => {
    this.messages = this.messages.concat(message);
  };

  popMessage = () => {
    this.messages = this.messages.slice(0, -1);
  };

  replaceMessage = (index, message) => {
    this.messages = [
      ...this.messages.slice(0, index),
      this.snapshot(message),
      ...this.messages.slice(index + 1),
    ];
  };

  snapshot = value => structuredClone(value);
}

/** A framework-free chat: `AbstractChat` as `useChat` uses it, with its state in memory. */
export class NodeChat extends AbstractChat {
  constructor({ messages, ...init }) {
    super({ ...init, state: new MemoryChatState(messages) });
  }
}

/** A transport of the `ai` package: `http` (DefaultChatTransport) or `ws` (WebSocket). */
export function makeTransport(kind, { server, token }) {
  if (kind === 'http') {
    const headers = token ? { authorization: `Bearer ${token}` } : undefined;
    return new DefaultChatTransport({ api: `${server}/api/chat`, headers });
  }
  if (kind === 'ws') {
    // Node 20 has no global WebSocket; `ws` is the one the ai docs name for Node.
    const params = token ? { token } : undefined;
    const url = `${server}/api/chat/ws`;
    return new WebSocketChatTransport({ url, params, webSocket: WebSocket });
  }
  throw new Error(`unknown transport ${kind}: http or ws`);
}

const TERMINAL_CHUNKS = new Set(['finish', 'abort', 'error']);

/**
 * A ChatTransport around one of the `ai` package's that records every request it carries: its
 * kind, the chunks that came (in order) and whether the stream closed; `onChunk` sees each chunk
 * as it passes, `onReconnect` each answer of `reconnectToStream` (a stream or null).
 */
export class RecordingTransport {
  constructor(inner, { onChunk = () => {}, onReconnect = () => {} } = {}) {
    this.inner = inner;
    this.onChunk = onChunk;
    this.onReconnect = onReconnect;
    this.requests = [];
  }

  get resumeStreamIsReplay() {
    return this.inner.resumeStreamIsReplay;
  }

  close() {
    this.inner.close?.();
  }

  async sendMessages(options) {
    const request = this.newRequest(options.trigger, options.messageId);
    return this.record(request, await this.inner.sendMessages(options));
  }

  async reconnectToStream(options) {
    const request = this.newRequest('resume-stream', undefined);
    const stream = await this.inner.reconnectToStream(options);
    request.reconnected = stream !== null;
    this.onReconnect(stream);
    return stream === null ? null : this.record(request, stream);
  }

  newRequest(trigger, messageId) {
    const request = { trigger, messageId: messageId ?? null, chunks: [], closed: false };
    this.requests.push(request);
    return request;
  }

  record(request, stream) {
    const { onChunk } = this;
    return stream.pipeThrough(
      new TransformStream({
        transform(chunk, controller) {
          request.chunks.push(chunk);
          onChunk(chunk, request);
          controller.enqueue(chunk);
        },
        flush() {
          request.closed = true;
        },
      }),
    );
  }
}

/** How a recorded stream ended: its last terminal chunk type, or `none`. */
export function endingOf(request) {
  const terminal = request.chunks.filter(chunk => TERMINAL_CHUNKS.has(chunk.type));
  return terminal.length === 0 ? 'none' : terminal.at(-1).type;
}

/**
 * The UIMessage `readUIMessageStream` makes of a recorded stream (its last state), and the
 * errors it reported on the way (an `error` chunk is one).
 */
export async function readRecorded(request) {
  const errors = [];
  const stream = new ReadableStream({
    start(controller) {
      request.chunks.forEach(chunk => controller.enqueue(chunk));
      controller.close();
    },
  });
  let message = null;
  for await (const state of readUIMessageStream({
    stream,
    onError: error => errors.push(String(error?.message ?? error)),
  })) {
    message = state;
  }
  return { message, errors };
}
