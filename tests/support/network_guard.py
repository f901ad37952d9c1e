"""No test reaches beyond this machine: every connection, datagram and name lookup that is not
loopback is refused and recorded, in every thread, whatever socket API made it.

The guard is an audit hook: Python's socket module raises `socket.connect`, `socket.getaddrinfo`
and the like itself, below any method a library may have captured before a monkeypatch. Sockets
that are not Python's would slip past, so uvloop (libuv's sockets) is made unimportable: every
loop under test, uvicorn's `auto` one included, is then asyncio's.
"""

from __future__ import annotations

import errno
import importlib.abc
import importlib.machinery
import ipaddress
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

from tests.support.violations import Kind, Violation, nearest_repo_frame, record

_LOCAL_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost", "ip6-loopback"})


class RealNetworkCall(OSError):
    """Raised in place of a call beyond this machine: the code under test sees a network error."""


def _text(host: object) -> str | None:
    if isinstance(host, bytes):
        return host.decode(errors="replace")
    return host if isinstance(host, str) else None


def _is_loopback(host: object) -> bool:
    """A loopback address, or a name of this machine's loopback interface."""
    text = _text(host)
    if text is None:
        return False
    if text.lower() in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(text.split("%")[0]).is_loopback
    except ValueError:
        return False


def _needs_no_dns(host: object) -> bool:
    """A lookup answered without asking a name server: none, loopback, or a numeric address."""
    text = _text(host)
    if host is None or text == "" or _is_loopback(host):
        return True
    try:
        ipaddress.ip_address((text or "").split("%")[0])
    except ValueError:
        return False
    return True


def _refused_peer(what: str) -> Callable[[Sequence[object]], str | None]:
    """The check of `socket.connect` and `socket.sendto`, which carry (socket, address)."""

    def refused(args: Sequence[object]) -> str | None:
        address = args[1]
        if not (isinstance(address, tuple) and address and isinstance(address[0], str | bytes)):
            return None  # a Unix socket's path or a netlink pair: not the network
        return None if _is_loopback(address[0]) else f"{what} {address!r}"

    return refused


def _refused_lookup(args: Sequence[object]) -> str | None:
    """`socket.getaddrinfo` and `socket.gethostbyname` carry the host first."""
    return None if _needs_no_dns(args[0]) else f"a DNS lookup of {args[0]!r}"


def _refused_reverse_lookup(args: Sequence[object]) -> str | None:
    """`socket.gethostbyaddr` carries the address; `socket.getnameinfo` a (host, port) tuple."""
    address = args[0]
    host = address[0] if isinstance(address, tuple) and address else address
    return None if _is_loopback(host) else f"a reverse DNS lookup of {address!r}"


_CHECKS: dict[str, Callable[[Sequence[object]], str | None]] = {
    "socket.connect": _refused_peer("a connection to"),
    "socket.sendto": _refused_peer("a datagram to"),
    "socket.getaddrinfo": _refused_lookup,
    "socket.gethostbyname": _refused_lookup,
    "socket.gethostbyaddr": _refused_reverse_lookup,
    "socket.getnameinfo": _refused_reverse_lookup,
}


def _audit(event: str, args: tuple[object, ...]) -> None:
    check = _CHECKS.get(event)
    if check is None:
        return
    refused = check(args)
    if refused is not None:
        record(Violation(Kind.NETWORK, f"{refused}, from {nearest_repo_frame()}"))
        raise RealNetworkCall(errno.ENETUNREACH, f"tests never leave this machine: {refused}")


class _RefuseUvloop(importlib.abc.MetaPathFinder):
    """`import uvloop` fails: its sockets would bypass the audit hook."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname == "uvloop" or fullname.startswith("uvloop."):
            raise ImportError("uvloop is off under test: its sockets bypass the network guard")
        return None


_installed = False


def install() -> None:
    """Guard this process from now on (once: audit hooks cannot be removed)."""
    global _installed
    if _installed:
        return
    if "uvloop" in sys.modules:
        raise RuntimeError("uvloop was imported before the network guard could refuse it")
    sys.meta_path.insert(0, _RefuseUvloop())
    sys.addaudithook(_audit)
    _installed = True
