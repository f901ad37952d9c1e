"""Runs a stdio MCP server so that it dies with this app, even when the app is SIGKILLed.

Used as the child's command: `python -m app.services.mcp.launcher <parent pid> <command> [args]`.
On Linux it asks the kernel (`prctl(PR_SET_PDEATHSIG, SIGKILL)`) to kill it when its parent
dies; the request survives `exec`, so the real server inherits it. If the parent died before
the request was made, the launcher exits instead of starting an orphan.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    if not sys.platform.startswith("linux"):
        return  # elsewhere the SDK's shutdown (close stdin, then kill the group) is all there is
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        sys.exit("usage: python -m app.services.mcp.launcher <parent pid> <command> [args...]")
    parent = int(argv[0])
    _die_with_parent()
    if os.getppid() != parent:
        sys.exit(0)  # the app is already gone
    try:
        os.execvp(argv[1], argv[1:])  # noqa: S606 - the configured server, by design
    except OSError as e:
        sys.exit(f"cannot start MCP server {argv[1]!r}: {e.strerror or e}")


if __name__ == "__main__":
    main(sys.argv[1:])
