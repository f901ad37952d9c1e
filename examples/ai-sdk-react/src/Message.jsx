// One message of the chat: its text parts, and a card for every server tool call.
import { getToolName, isToolUIPart } from 'ai';

/** What the page says about an answer: streaming, stopped, failed or completed. */
function answerState({ message, isStreaming, isStopped, isFailed }) {
  if (isStreaming) return 'streaming';
  // The status the server stored: in the `finish` chunk's metadata, and in loaded messages.
  const status = message.metadata?.status;
  if (isStopped || status === 'cancelled') return 'stopped';
  // useChat stops reading at an `error` chunk, before the `finish` that follows it.
  if (isFailed || status === 'failed') return 'failed';
  return 'completed';
}

export function Message({ message, isStreaming, isStopped, isFailed }) {
  const isUser = message.role === 'user';
  const state = isUser ? undefined : answerState({ message, isStreaming, isStopped, isFailed });
  return (
    <article
      className={`message ${message.role}`}
      data-testid={isUser ? 'user-message' : 'assistant-message'}
      data-state={state}
      data-message-id={message.id}
    >
      {message.parts.map((part, index) => (
        <MessagePart key={index} part={part} />
      ))}
      {state === 'stopped' && <p className="note">Stopped.</p>}
      {state === 'failed' && <p className="note">Failed.</p>}
    </article>
  );
}

function MessagePart({ part }) {
  if (part.type === 'text') {
    return (
      <p className="text" data-testid="text-part">
        {part.text}
      </p>
    );
  }
  if (isToolUIPart(part)) {
    return <ToolCard part={part} />;
  }
  return null; // step-start and parts this example does not show
}

/** A server tool call: its name, state, input, and output or error. */
function ToolCard({ part }) {
  const name = getToolName(part);
  return (
    <section
      className="tool-card"
      data-testid="tool-card"
      data-state={part.state}
      aria-label={`tool ${name}`}
    >
      <header>
        <span className="tool-name" data-testid="tool-name">
          {name}
        </span>
        <span className="tool-state" data-testid="tool-state">
          {part.state}
        </span>
      </header>
      {part.input !== undefined && <Json testid="tool-input" label="Input" value={part.input} />}
      {part.state === 'output-available' && (
        <Json testid="tool-output" label="Output" value={part.output} />
      )}
      {part.state === 'output-error' && (
        <p className="tool-error" data-testid="tool-error">
          {part.errorText}
        </p>
      )}
    </section>
  );
}

function Json({ testid, label, value }) {
  return (
    <div className="json">
      <span className="label">{label}</span>
      <pre data-testid={testid}>{JSON.stringify(value, null, 2)}</pre>
    </div>
  );
}
