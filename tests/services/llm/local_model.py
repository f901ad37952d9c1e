"""The real local model for tests: `make install` installs it; optional in a plain pytest run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.guard_plugin import NO_SKIPS


def require_local_model() -> Path:
    """The default GGUF; skips when the local packages are missing, unless `NO_SKIPS` (fails)."""
    try:
        import llama_cpp  # noqa: F401

        from app.services.llm.local import LocalModelMissing, default_model_path
    except ImportError as e:
        reason = f"the local model's packages are not installed ({e}): make install"
    else:
        try:
            return default_model_path()
        except LocalModelMissing as e:
            reason = f"the local model is not installed ({e}): make install"
    if NO_SKIPS:
        pytest.fail(f"this run must test the local model, but {reason}")
    pytest.skip(reason)
