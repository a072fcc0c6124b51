"""Fixtures for the offload.fastapi tests: event loops, runtimes, real servers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from offload_fastapi_support import Server

import offload


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {"use_uvloop": False}), id="asyncio"),
        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


@pytest.fixture
async def runtime() -> AsyncIterator[offload.Runtime]:
    """A fresh runtime per test (the default one can only be shut down once)."""
    rt = offload.Runtime(threads=4)
    yield rt
    if not rt.closed:
        await rt.shutdown(5)


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Any]:
    servers: list[Server] = []

    def start(loop: str = "asyncio", drain_timeout: float = 1.0) -> Server:
        server = Server(loop, tmp_path / f"server-{len(servers)}.log", drain_timeout)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
