"""Tool names the model APIs accept: `<server>__<tool>` within `^[a-zA-Z0-9_-]{1,64}$`."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

MAX_NAME = 64
_NOT_ALLOWED = re.compile(r"[^a-zA-Z0-9_-]")
_HASH_CHARS = 6


def _clean(part: str) -> str:
    return _NOT_ALLOWED.sub("_", part) or "_"


def _hashed(base: str, server: str, tool: str) -> str:
    digest = hashlib.sha256(f"{server}\x00{tool}".encode()).hexdigest()[:_HASH_CHARS]
    return f"{base[: MAX_NAME - _HASH_CHARS - 1]}_{digest}"


def model_names(
    tools: Iterable[tuple[str, str]], *, taken: Iterable[str] = ()
) -> dict[tuple[str, str], str]:
    """The model-facing name of each `(server, tool)`.

    Characters outside the rule become `_`; a name over 64 characters is cut and ends in a
    short hash of the original pair. When two pairs still meet (or meet a `taken` name, e.g. a
    built-in tool), the first in `(server, tool)` order keeps the plain name and the others get
    the hash: the outcome depends only on the set of tools, never on the order they arrived in.
    """
    used = set(taken)
    names: dict[tuple[str, str], str] = {}
    for server, tool in sorted(set(tools)):
        base = f"{_clean(server)}__{_clean(tool)}"
        name = base if len(base) <= MAX_NAME else _hashed(base, server, tool)
        if name in used:
            name = _hashed(base, server, tool)
        used.add(name)
        names[(server, tool)] = name
    return names
