"""Micro-benchmark: CPU per `response.delta` frame for each way of encoding it.

``python -m bench.frame_encoding`` prints µs per frame (best of 5 rounds) for
``model_dump_json()`` (the sink before), the model's core serializer (the sink now),
``orjson`` over ``model_dump()`` and ``orjson`` over a hand-built dict, and checks they agree.
"""

from __future__ import annotations

import timeit
from collections.abc import Callable

import orjson

from app.protocol import ResponseDelta

_FRAMES = 100_000


def encoders(frame: ResponseDelta) -> dict[str, Callable[[], str]]:
    """Each candidate, producing the text frame."""
    serializer = ResponseDelta.__pydantic_serializer__
    fields = {"type": frame.type, "response_id": frame.response_id, "text": frame.text}
    return {
        "model_dump_json()": frame.model_dump_json,
        "__pydantic_serializer__.to_json().decode()": lambda: serializer.to_json(frame).decode(),
        "orjson(model_dump())": lambda: orjson.dumps(frame.model_dump(mode="json")).decode(),
        "orjson(dict)": lambda: orjson.dumps(fields).decode(),
    }


def main() -> None:
    """Print µs per frame for each encoder."""
    frame = ResponseDelta(response_id="5f0c6b8e-7c43-4f6e-9a59-0d7f1d3c2b1a", text="123:45678 ")
    candidates = encoders(frame)
    if len({encode() for encode in candidates.values()}) != 1:
        raise SystemExit("the encoders disagree on the JSON")
    for name, encode in candidates.items():
        best = min(timeit.repeat(encode, number=_FRAMES, repeat=5))
        print(f"{name:45s} {best / _FRAMES * 1e6:6.2f} µs/frame")


if __name__ == "__main__":
    main()
