"""Guards on every asyncio loop of the process: a callback that blocks its loop, a task left
pending when its loop shuts down.

Blocking is the CPU time the loop's thread spends in one callback (`time.thread_time` around
`Handle._run`), not wall time: a test process starved by others on a loaded machine loses wall
time but no CPU time, so it cannot fail a test. Time in the garbage collector and in first
imports is left out too (see `_count_gc_time`, `_timed_find_and_load`). The price is that a
callback waiting in a blocking call (a `time.sleep`, a synchronous socket) is not caught; ruff's
ASYNC rules catch the usual ones.

A task still pending when `asyncio.run` (or `asyncio.Runner`, which pytest-asyncio and uvicorn
use) ends would be cancelled silently; it is recorded just before that.
"""

from __future__ import annotations

import asyncio
import asyncio.runners
import gc
import importlib._bootstrap
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

from tests.support.violations import REPO_ROOT, Kind, Violation, is_our_code, record

BLOCKING_THRESHOLD_S = 0.1

Task = asyncio.Task[Any]
TaskSet = weakref.WeakSet[Task]


class _ExcusedTime(threading.local):
    """CPU seconds this thread spent where the running callback is not to blame."""

    total = 0.0
    gc_started = 0.0
    import_depth = 0


_excused = _ExcusedTime()


def _count_gc_time(phase: str, info: dict[str, int]) -> None:
    """A collection pays for garbage of the whole process, not for the callback it interrupts."""
    if _excused.import_depth:
        return  # already counted as import time
    if phase == "start":
        _excused.gc_started = time.thread_time()
    else:
        _excused.total += time.thread_time() - _excused.gc_started


_original_find_and_load = vars(importlib._bootstrap)["_find_and_load"]


def _timed_find_and_load(name: str, import_: Callable[..., ModuleType]) -> ModuleType:
    """A first import is a one-off cost of a fresh process: counted, it would fail whichever
    test happens to run first, and pass the same test in a longer run."""
    _excused.import_depth += 1
    started = time.thread_time() if _excused.import_depth == 1 else 0.0
    try:
        module: ModuleType = _original_find_and_load(name, import_)
        return module
    finally:
        _excused.import_depth -= 1
        if _excused.import_depth == 0:
            _excused.total += time.thread_time() - started


_original_handle_run = asyncio.Handle._run


def _timed_handle_run(handle: asyncio.Handle) -> None:
    excused_before, started = _excused.total, time.thread_time()
    _original_handle_run(handle)
    spent = time.thread_time() - started - (_excused.total - excused_before)
    if spent > BLOCKING_THRESHOLD_S:
        blocker = describe_callback(handle)
        record(Violation(Kind.BLOCKED_LOOP, f"{blocker} ran for {spent * 1000:.0f} ms of CPU"))


_original_cancel_all_tasks: Callable[[asyncio.AbstractEventLoop], None] = vars(asyncio.runners)[
    "_cancel_all_tasks"
]


def _recording_cancel_all_tasks(loop: asyncio.AbstractEventLoop) -> None:
    """What `asyncio.Runner.close` calls before closing its loop: the leftovers are leaks."""
    for task in asyncio.all_tasks(loop):
        record(Violation(Kind.LEAKED_TASK, f"{describe_task(task)} was pending at loop shutdown"))
    _original_cancel_all_tasks(loop)


# Every loop created, so that tasks still pending on a loop that outlives a test can be found.
# Loops are made in several threads: the lock keeps the set whole while it is read.
_loops: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
_loops_lock = threading.Lock()
_original_loop_init = asyncio.BaseEventLoop.__init__


def _registering_loop_init(loop: asyncio.BaseEventLoop) -> None:
    _original_loop_init(loop)
    with _loops_lock:
        _loops.add(loop)


def pending_tasks() -> TaskSet:
    """The tasks pending now, on every loop of the process."""
    with _loops_lock:
        loops = list(_loops)
    return weakref.WeakSet(task for loop in loops for task in asyncio.all_tasks(loop))


def tasks_pending_since(before: Iterable[Task]) -> list[Violation]:
    """A violation for each task pending now that was not pending `before`."""
    earlier = set(before)
    return [
        Violation(Kind.LEAKED_TASK, f"{describe_task(task)} was pending at the end of the test")
        for task in pending_tasks()
        if task not in earlier
    ]


_installed = False


def install() -> None:
    """Guard every asyncio loop of this process from now on (once)."""
    global _installed
    if _installed:
        return
    asyncio.Handle._run = _timed_handle_run  # type: ignore[method-assign, assignment]
    asyncio.BaseEventLoop.__init__ = _registering_loop_init  # type: ignore[method-assign, assignment]
    vars(asyncio.runners)["_cancel_all_tasks"] = _recording_cancel_all_tasks
    gc.callbacks.append(_count_gc_time)
    vars(importlib._bootstrap)["_find_and_load"] = _timed_find_and_load
    _installed = True


def describe_callback(handle: asyncio.Handle) -> str:
    """The task a callback is a step of, or the callback itself."""
    callback = getattr(handle, "_callback", None)
    owner = getattr(callback, "__self__", None)
    if isinstance(owner, asyncio.Task):
        return f"a step of task {describe_task(owner)}"
    return f"callback {callback!r}"


def describe_task(task: Task) -> str:
    """`'name' (coroutine, at file:line)`: where the task is, or was when it was looked at."""
    coroutine = task.get_coro()
    name = getattr(coroutine, "__qualname__", repr(coroutine))
    return f"{task.get_name()!r} ({name}, at {_where_suspended(coroutine)})"


def _where_suspended(coroutine: object) -> str:
    """The innermost awaiting frame of ours (app/, tests/), else the innermost of all; for a
    finished coroutine, where its code starts."""
    ours = innermost = None
    code = getattr(coroutine, "cr_code", None)
    while coroutine is not None:
        frame = getattr(coroutine, "cr_frame", None) or getattr(coroutine, "gi_frame", None)
        if frame is not None:
            innermost = frame
            ours = frame if is_our_code(frame.f_code.co_filename) else ours
        coroutine = getattr(coroutine, "cr_await", None) or getattr(coroutine, "gi_yieldfrom", None)
    frame = ours or innermost
    if frame is not None:
        return f"{_short_path(frame.f_code.co_filename)}:{frame.f_lineno}"
    if code is not None:
        return f"{_short_path(code.co_filename)}:{code.co_firstlineno}, now finished"
    return "its end"


def _short_path(filename: str) -> str:
    path = Path(filename)
    if path.is_relative_to(REPO_ROOT) and ".venv" not in path.parts:
        return str(path.relative_to(REPO_ROOT))
    return "/".join(path.parts[-2:])
