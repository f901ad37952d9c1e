"""What the test guards saw: a real network call, a leaked task, a blocked event loop.

The guards record a violation instead of (only) raising, because the code under test may swallow
the exception (the LLM provider turns a refused connection into `llm_unavailable`); the test
plugin (`tests/support/guard_plugin.py`) fails the test during which one was recorded. A server
process that the tests start records into a file of the running test's report folder
(`REPORT_ENV` names it), which `take` reads back.
"""

from __future__ import annotations

import os
import sys
import threading
import uuid
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from types import FrameType

import orjson

REPO_ROOT = Path(__file__).resolve().parents[2]
_GUARD_FILES = {
    Path(__file__).resolve().with_name(name)
    for name in ("violations.py", "network_guard.py", "loop_guards.py")
}
# Set in a server process's environment: the file its violations are appended to.
REPORT_ENV = "TEST_GUARD_REPORT"


class Kind(StrEnum):
    """What went wrong."""

    NETWORK = "real network call"
    LEAKED_TASK = "task left pending"
    BLOCKED_LOOP = "event loop blocked"


def _where() -> str:
    return f"process {os.getpid()}, thread {threading.current_thread().name!r}"


@dataclass(frozen=True)
class Violation:
    """One mistake a guard caught, with where it happened."""

    kind: Kind
    detail: str
    where: str = field(default_factory=_where)

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail} [{self.where}]"


class _Record:
    """Violations of this process; in a server process, the file they are appended to."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: list[Violation] = []
        self.report_file: Path | None = None  # set in a server process the tests started
        self.children_folder: Path | None = None  # set by the test process for each test


_record = _Record()


def record(violation: Violation) -> None:
    """Keep `violation` for the end of the running test (any thread, any process)."""
    if _record.report_file is not None:
        # One write per violation, appended: several threads and processes may share the file.
        with _record.report_file.open("ab") as report:
            report.write(orjson.dumps(asdict(violation)) + b"\n")
        return
    with _record.lock:
        _record.seen.append(violation)


def report_to_file(path: Path) -> None:
    """In a server process: append violations to `path`, read by the test process."""
    _record.report_file = path


def collect_children_into(folder: Path | None) -> None:
    """Server processes started from now on report into `folder` (None: they report nowhere)."""
    _record.children_folder = folder


def child_env() -> dict[str, str]:
    """The environment by which a server process reports to the running test (or nothing)."""
    if _record.children_folder is None:
        return {}
    report = _record.children_folder / f"process-{uuid.uuid4().hex}.jsonl"
    return {REPORT_ENV: str(report)}


def take(kind: Kind | None = None) -> list[Violation]:
    """Remove and return the recorded violations (of `kind`), this process's and its servers'."""
    with _record.lock:
        _record.seen.extend(_read_children())
        taken = [v for v in _record.seen if kind is None or v.kind == kind]
        _record.seen = [v for v in _record.seen if v not in taken]
    return taken


def _read_children() -> list[Violation]:
    folder = _record.children_folder
    if folder is None or not folder.is_dir():
        return []
    found: list[Violation] = []
    for report in sorted(folder.glob("*.jsonl")):
        lines = report.read_bytes().splitlines()
        report.unlink()  # a process that reports again recreates it
        found.extend(_parse(line) for line in lines if line.strip())
    return found


def _parse(line: bytes) -> Violation:
    fields = orjson.loads(line)
    return Violation(Kind(fields["kind"]), fields["detail"], fields["where"])


def is_our_code(filename: str) -> bool:
    """A file of app/ or tests/ (not of a library, not of the guards themselves)."""
    path = Path(filename)
    if not path.is_relative_to(REPO_ROOT) or path in _GUARD_FILES:
        return False
    return path.relative_to(REPO_ROOT).parts[0] in {"app", "tests"}


def nearest_repo_frame() -> str:
    """`file:line in function` of the innermost caller in app/ or tests/, guards aside.

    Names where a guarded call came from: the stack itself mostly passes through libraries.
    """
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if is_our_code(frame.f_code.co_filename):
            relative = Path(frame.f_code.co_filename).relative_to(REPO_ROOT)
            return f"{relative}:{frame.f_lineno} in {frame.f_code.co_name}"
        frame = frame.f_back
    return "no frame of app/ or tests/ on the stack"
