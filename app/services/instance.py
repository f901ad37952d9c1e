"""This process's place on this machine: a slot in the state directory, held while it runs.

Each server process takes the first free slot (`<STATE_DIR>/instances/<n>.lock`, locked with
`flock`, which the kernel drops when the process dies, SIGKILL included). Holding slot n proves
that the previous holder of slot n is dead, so what it left can be taken over at once: its
spill file of events it could not write (replayed into the store before this process serves),
its session leases (freed) and its claimed summary and title jobs (handed back), instead of
waiting for them to expire. The slot file records the instance id of its holder.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

# More server processes than this on one state directory is a configuration mistake.
MAX_SLOTS = 64


class NoFreeSlot(Exception):
    """Every slot of the state directory is held by a live process."""


@dataclass(slots=True)
class InstanceSlot:
    """A held slot: this instance's id, the dead predecessor's id, and where to spill."""

    number: int
    instance_id: str
    predecessor_id: str | None
    spill_path: Path
    _handle: IO[str]

    def release(self) -> None:
        """Unlock the slot (the process is stopping); the next process here takes it over."""
        with contextlib.suppress(OSError):
            fcntl.flock(self._handle, fcntl.LOCK_UN)
        self._handle.close()


def take_slot(state_dir: str) -> InstanceSlot:
    """Lock the first free slot under `state_dir` and record this instance's new id in it."""
    folder = Path(state_dir) / "instances"
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(MAX_SLOTS):
        handle = (folder / f"{number}.lock").open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        return _claimed(folder, number, handle)
    raise NoFreeSlot(f"all {MAX_SLOTS} instance slots of {folder} are held by live processes")


def _claimed(folder: Path, number: int, handle: IO[str]) -> InstanceSlot:
    handle.seek(0)
    predecessor = handle.read().strip() or None
    instance_id = str(uuid.uuid4())
    handle.seek(0)
    handle.truncate()
    handle.write(instance_id)
    handle.flush()
    os.fsync(handle.fileno())
    return InstanceSlot(
        number=number,
        instance_id=instance_id,
        predecessor_id=predecessor,
        spill_path=folder / f"{number}.spill.jsonl",
        _handle=handle,
    )
