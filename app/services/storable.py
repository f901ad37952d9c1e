"""Making model and tool output storable on every store before anyone sees it.

PostgreSQL refuses NUL (U+0000) in `text` and `jsonb`, and no store can encode a lone surrogate
(U+D800..U+DFFF) as UTF-8. Client input holding them is refused at the edge (`invalid_event`);
what a model or a tool produces is not the client's fault, so it is repaired instead: each such
character becomes U+FFFD, the replacement character, before it is streamed or stored, so the
text a client saw is exactly the text stored. Numbers JSON cannot hold (NaN, infinities) become
null, as the JSON encoder would write them; doubles of 2^53 and more, all integers, become the
integers they are, as PostgreSQL's jsonb reads them back.
"""

from __future__ import annotations

import math
import re

from pydantic import JsonValue

REPLACEMENT = "\ufffd"
# From here on every double is an integer (its spacing is 2 or more).
_EXACT_FLOAT_LIMIT = 2.0**53
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def unstorable(text: str) -> bool:
    """True when a store would refuse the text (client input holding it is refused)."""
    return _UNSTORABLE.search(text) is not None


def storable_text(text: str) -> str:
    """The text with every unstorable character replaced by U+FFFD."""
    if _UNSTORABLE.search(text) is None:
        return text  # the common case: no copy
    return _UNSTORABLE.sub(REPLACEMENT, text)


def storable_json(value: JsonValue) -> JsonValue:
    """A JSON value with every string (keys included) storable and every number finite."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, float):
        return _storable_number(value)
    if isinstance(value, list):
        return [storable_json(item) for item in value]
    if isinstance(value, dict):
        return {storable_text(key): storable_json(item) for key, item in value.items()}
    return value


def _storable_number(value: float) -> JsonValue:
    if not math.isfinite(value):
        return None
    if abs(value) >= _EXACT_FLOAT_LIMIT:
        # An integer in all but type: PostgreSQL's jsonb keeps numbers as exact decimals and
        # gives it back as an integer, so it is stored as the integer it is (exactly).
        return int(value)
    return value
