// A useChat front-end for this server: `?chat=<id>` picks the chat, `?transport=http|ws` the
// transport, `?token=` the bearer token when the server wants one.
import { useChat } from '@ai-sdk/react';
import { useEffect, useMemo, useState } from 'react';
import { Message } from './Message.jsx';
import { createTransport, loadMessages, readSettings, stopOnServer } from './server.js';

export default function App() {
  const [settings] = useState(readSettings);
  // One transport per page. It is not closed on unmount: it lives as long as the page.
  const transport = useMemo(() => createTransport(settings), [settings]);
  const [initialMessages, setInitialMessages] = useState(null);
  const [loadError, setLoadError] = useState(null);

  useEffect(() => {
    let current = true;
    loadMessages(settings).then(
      (messages) => current && setInitialMessages(messages),
      (error) => current && setLoadError(error.message),
    );
    return () => {
      current = false;
    };
  }, [settings]);

  return (
    <main>
      <header className="top">
        <h1>useChat example</h1>
        <span data-testid="transport">{settings.transport === 'ws' ? 'WebSocket' : 'HTTP + SSE'}</span>
      </header>
      {loadError && (
        <p role="alert" data-testid="error">
          {loadError}
        </p>
      )}
      {/* useChat takes its initial messages once: the chat mounts after they are loaded. */}
      {initialMessages && (
        <Chat settings={settings} transport={transport} initialMessages={initialMessages} />
      )}
    </main>
  );
}

function Chat({ settings, transport, initialMessages }) {
  // Answers this page stopped: stop() ends this page's stream at once, before the server's
  // `message-metadata` (status `cancelled`) can arrive; a reload loads that status.
  const [stoppedIds, setStoppedIds] = useState(() => new Set());
  const { messages, sendMessage, stop, status, error } = useChat({
    id: settings.chatId,
    messages: initialMessages,
    transport,
    resume: true, // after a reload mid-answer, the running answer is replayed and goes on live
    onFinish: ({ message, isAbort }) => {
      if (isAbort) setStoppedIds((ids) => new Set(ids).add(message.id));
    },
  });
  const busy = status === 'submitted' || status === 'streaming';

  function stopAnswer() {
    // Over the WebSocket, stop() sends an `abort` frame, which cancels the answer on the server.
    if (settings.transport === 'http') void stopOnServer(settings);
    stop();
  }

  return (
    <>
      <section className="transcript" data-testid="transcript" aria-live="polite">
        {messages.map((message, index) => {
          const isLast = index === messages.length - 1;
          return (
            <Message
              key={message.id}
              message={message}
              isStreaming={busy && isLast}
              isStopped={stoppedIds.has(message.id)}
              isFailed={status === 'error' && isLast}
            />
          );
        })}
      </section>
      {error && (
        <p role="alert" data-testid="error">
          {error.message}
        </p>
      )}
      <footer className="controls">
        <Composer disabled={busy} onSend={(text) => sendMessage({ text })} />
        <button type="button" data-testid="stop" onClick={stopAnswer} disabled={!busy}>
          Stop
        </button>
        <span className="status" data-testid="status" data-state={status}>
          {status}
        </span>
      </footer>
    </>
  );
}

function Composer({ disabled, onSend }) {
  const [text, setText] = useState('');

  function submit(event) {
    event.preventDefault();
    if (!text.trim()) return;
    onSend(text);
    setText('');
  }

  return (
    <form className="composer" onSubmit={submit}>
      <input
        data-testid="message-input"
        aria-label="Message"
        placeholder="Ask something…"
        value={text}
        onChange={(event) => setText(event.target.value)}
      />
      <button type="submit" data-testid="send" disabled={disabled}>
        Send
      </button>
    </form>
  );
}
