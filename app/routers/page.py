"""The browser page at `/`, and the built useChat example at `/examples/ai-sdk/`."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
# `make ai-sdk-example` builds examples/ai-sdk-react (Vite, `base: '/examples/ai-sdk/'`) into here.
AI_SDK_EXAMPLE_DIST = Path(__file__).resolve().parents[2] / "examples" / "ai-sdk-react" / "dist"
AI_SDK_EXAMPLE_PATH = "/examples/ai-sdk"

router = APIRouter(tags=["page"])


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


def mount_examples(app: FastAPI, *, ai_sdk_dist: Path = AI_SDK_EXAMPLE_DIST) -> None:
    """Serve the useChat example at `/examples/ai-sdk/` when it has been built; a server without
    Node.js (the example is not built) starts all the same, without it."""
    if ai_sdk_dist.is_dir():
        app.mount(
            AI_SDK_EXAMPLE_PATH,
            StaticFiles(directory=ai_sdk_dist, html=True),
            name="ai-sdk-example",
        )
