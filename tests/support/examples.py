"""The built useChat example (examples/ai-sdk-react/dist), which tests open on a real server."""

from __future__ import annotations

import pytest

from app.routers.page import AI_SDK_EXAMPLE_DIST
from tests.support.guard_plugin import NO_SKIPS


def require_ai_sdk_example() -> None:
    """Fail where every test must run (scripts/test-services.sh builds it), else skip, when the
    example has not been built: the server serves it only when its dist/ exists."""
    if (AI_SDK_EXAMPLE_DIST / "index.html").is_file():
        return
    if NO_SKIPS:
        pytest.fail("the useChat example is not built: scripts/test-services.sh builds it")
    pytest.skip("the useChat example is not built here: make ai-sdk-example")
