"""Durable tasks as a user's type checker sees them (see api_usage.py for the rules:
never run; every `assert_type` must hold and every `# E` line must be an error)."""

from __future__ import annotations

import asyncio

from typing_extensions import assert_type

import offload
from offload.durable import DurableInfo, DurableLane, DurableTask


async def fetch(url: str, retries: int = 3) -> bytes:
    await asyncio.sleep(0)
    return url.encode()


def resize(image: bytes, width: int) -> list[int]:
    return [width] * len(image)


@offload.task(durable=True, retries=3)
def invoice(order_id: int, user: str) -> str:
    return f"{order_id}:{user}"


# -- spawn: arguments checked against the function, the handle typed by its result -------
assert_type(offload.durable.spawn(resize, b"x", 3), DurableTask[list[int]])
assert_type(offload.durable.spawn(fetch, "u", retries=1), DurableTask[bytes])
offload.durable.spawn(resize, "not bytes", 3)  # E
offload.durable.spawn(resize, b"x")  # E
offload.durable.spawn(fetch, "u", retry=1)  # E
assert_type(offload.durable.options(retries=2, delay=5), DurableLane)
assert_type(offload.durable.options(key="k").spawn(resize, b"", 1), DurableTask[list[int]])
offload.durable.options(key="k").spawn(resize, b"", "1")  # E

# -- a runtime's durable tier ---------------------------------------------------------
rt = offload.Runtime(store="sqlite:///app.db", durable_concurrency=0)
assert_type(rt.durable.spawn(resize, b"", 2), DurableTask[list[int]])
rt.durable.spawn(resize, b"", width="2")  # E

# -- @offload.task(durable=True) --------------------------------------------------------
assert_type(invoice.spawn(7, "ada"), DurableTask[str])
assert_type(invoice(7, "ada"), str)
invoice.spawn("7", "ada")  # E
invoice.spawn(7)  # E


# -- handles and lookups ---------------------------------------------------------------
async def results(task: DurableTask[list[int]]) -> None:
    assert_type(await task.result(timeout=5), list[int])
    await task.persisted()
    assert_type(task.id, str)
    assert_type(task.result_sync(), list[int])
    assert_type(offload.durable.get(task.id), DurableInfo | None)
    assert_type(task.cancel(), str)
