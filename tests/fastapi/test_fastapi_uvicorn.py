"""The real thing: uvicorn in a subprocess, requests, SIGTERM, drain, exit status 0."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from offload_fastapi_support import WAIT


def unfinished_names(log: str) -> set[str]:
    """Task names the runtime's shutdown logged as unfinished."""
    return set(re.findall(r"offload task '([^']+)' \(id=\d+.*did not finish before shutdown", log))


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_sigterm_finishes_or_names_every_accepted_task(start_server: Any, loop: str) -> None:
    server = start_server(loop=loop, drain_timeout=1.0)
    accepted: dict[str, str] = {}  # the name it logs when done -> the task's name
    with httpx.Client(base_url=server.url, timeout=WAIT) as client:
        assert client.get("/loop").json()["loop"].startswith(loop)
        for i in range(4):
            for kind in ("async", "sync"):
                params: dict[str, Any] = {"kind": kind, "name": f"{kind}-{i}", "seconds": 0.2}
                task = client.post("/spawn", params=params).raise_for_status().json()
                accepted[task["name"]] = task["name"]
        # Never finish: a coroutine (cancelled at shutdown) and a thread (can't be).
        for kind in ("async", "sync"):
            params = {"kind": kind, "name": f"stuck-{kind}", "seconds": 3600}
            accepted[f"stuck-{kind}"] = client.post("/spawn", params=params).json()["name"]
        names = client.post("/background", params={"name": "bg", "seconds": 0.2}).json()["names"]
        accepted.update({names[0]: "sleep_async", names[1]: "sleep_sync"})

    # One request is still in flight when SIGTERM arrives: uvicorn lets it finish, its
    # background tasks are spawned after its response, and only then does offload drain.
    with ThreadPoolExecutor(1) as pool:
        params = {"name": "inflight", "seconds": 0.2, "delay": 1.0}
        inflight = pool.submit(httpx.post, f"{server.url}/background", params=params, timeout=WAIT)
        server.wait_for_log("request inflight in flight")
        status = server.terminate()
        response = inflight.result()
    assert response.status_code == 200
    names = response.json()["names"]
    accepted.update({names[0]: "sleep_async", names[1]: "sleep_sync"})

    log = server.log()
    assert status == 0, log
    unfinished = unfinished_names(log)
    assert {"stuck-async", "stuck-sync"} <= unfinished, log
    for logged_as, task_name in accepted.items():
        assert f"finished {logged_as}" in log or task_name in unfinished, (logged_as, log)
    assert "Application shutdown complete" in log
