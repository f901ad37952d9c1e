"""Runs a stdio MCP server so that it dies with this app, even when the app is SIGKILLed.

Used as the child's command: `python -m app.services.mcp.launcher <parent pid> <command> [args]`.
On Linux it asks the kernel (`prctl(PR_SET_PDEATHSIG, SIGKILL)`) to kill it when its parent
dies; the request survives `exec`, so the real server inherits it. If the parent died before
the request was made, the launcher exits instead of starting an orphan.

The kernel's request covers the direct child only, and teams often start servers through a
wrapper (`uvx`, `npx`) whose own children would outlive the app. So before its `exec` the
launcher also starts a watcher (forked twice: no child of the server, which may wait for its
children): it waits on pidfds of the app and of the server, and when either exits it kills what
is left of the server's process group, itself included (the SDK starts each server in a session
of its own). Without pidfds (Linux before 5.3) there is no watcher.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: signal.Signals) -> None:
    """Ask the kernel (Linux) for `sig` when this process's parent dies, however it dies.

    Also what `python -m app.serve` asks for its workers; it lives here because the launcher,
    run by path with `-I -S`, can import only the standard library."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def _start_watcher(parent: int) -> None:
    """Start the watcher of the app (`parent`) and of this process (the server, once exec'd)."""
    if os.getpgrp() != os.getpid():
        return  # not the leader of a group of its own: killing the group could hit the app
    try:
        # Close-on-exec both: the server does not inherit them. Opened after the launcher's
        # check of its parent: had the app died meanwhile, the launcher would be dead too.
        app, server = os.pidfd_open(parent), os.pidfd_open(os.getpid())
    except OSError:
        return  # no pidfds here: the kernel's request alone covers the direct child
    middle = os.fork()
    if middle != 0:
        os.waitpid(middle, 0)
        os.close(app)
        os.close(server)
        return
    try:
        if os.fork() == 0:
            _watch(app, server)
    finally:
        os._exit(0)


def _watch(app: int, server: int) -> None:
    try:
        # Not a holder of the server's pipes: its stdout must end when the server does.
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        # The SDK's orderly stop signals the whole group: the watcher goes with the server.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        watch = select.poll()
        watch.register(app, select.POLLIN)
        watch.register(server, select.POLLIN)
        # A pidfd is readable once its process exited. Both are when the app is SIGKILLed (the
        # kernel kills the server with it); the server's own children are what is left.
        watch.poll()
        os.killpg(os.getpgrp(), signal.SIGKILL)
    finally:
        os._exit(0)


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        sys.exit("usage: python -m app.services.mcp.launcher <parent pid> <command> [args...]")
    parent = int(argv[0])
    # Elsewhere than Linux the SDK's shutdown (close stdin, then kill the group) is all there is.
    if sys.platform.startswith("linux"):
        die_with_parent(signal.SIGKILL)
        if os.getppid() != parent:
            sys.exit(0)  # the app is already gone
        _start_watcher(parent)
    try:
        os.execvp(argv[1], argv[1:])  # noqa: S606 - the configured server, by design
    except OSError as e:
        sys.exit(f"cannot start MCP server {argv[1]!r}: {e.strerror or e}")


if __name__ == "__main__":
    main(sys.argv[1:])
