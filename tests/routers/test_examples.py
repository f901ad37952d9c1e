"""The built useChat example, served at /examples/ai-sdk/ only when it exists."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from fastapi import FastAPI

from app.routers.page import mount_examples
from tests.support.examples import require_ai_sdk_example
from tests.support.server import RunningServer


async def test_the_built_example_and_its_assets_are_served(server: RunningServer) -> None:
    require_ai_sdk_example()
    async with httpx.AsyncClient(base_url=server.http_url, trust_env=False) as http:
        page = await http.get("/examples/ai-sdk/", params={"chat": "abc", "transport": "ws"})
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        # Vite's `base`: the bundle is asked for under the same prefix.
        script = re.search(r'src="(/examples/ai-sdk/assets/[^"]+\.js)"', page.text)
        assert script is not None, page.text
        bundle = await http.get(script.group(1))
        assert bundle.status_code == 200
        assert "javascript" in bundle.headers["content-type"]
        bare = await http.get("/examples/ai-sdk")
        assert bare.status_code == 307
        assert bare.headers["location"].endswith("/examples/ai-sdk/")


async def test_an_unbuilt_example_is_not_mounted(tmp_path: Path) -> None:
    app = FastAPI()
    mount_examples(app, ai_sdk_dist=tmp_path / "dist")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        assert (await http.get("/examples/ai-sdk/")).status_code == 404


async def test_a_built_example_is_mounted(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<p>the example</p>")
    app = FastAPI()
    mount_examples(app, ai_sdk_dist=tmp_path)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        page = await http.get("/examples/ai-sdk/")
    assert page.status_code == 200
    assert page.text == "<p>the example</p>"
