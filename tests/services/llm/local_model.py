"""The real local model for tests: present in CI (`make test` installs it), optional locally."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import IN_CI


def require_local_model() -> Path:
    """The default GGUF; skips when the local packages are missing, except in CI (fails)."""
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
    if IN_CI:
        pytest.fail(f"CI must test the local model, but {reason}")
    pytest.skip(reason)
