"""What a user's type checker sees: expected inferences and expected errors.

Never run, only type-checked: `tools/check_typing.py` (part of `make lint`) runs mypy and
pyright over this file against the installed package. Every `assert_type` must hold,
every line ending in `# E` must be reported as an error by both checkers, and no other
line may be. (The one documented gap: with `timeout=`, mypy checks `offload.call`'s
result type but not its arguments; see `Runtime.call`.)
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from typing_extensions import assert_type

import offload
from offload import Task


async def fetch(url: str, retries: int = 3) -> bytes:
    await asyncio.sleep(0)
    return url.encode()


def resize(image: bytes, width: int) -> list[int]:
    return [width] * len(image)


# -- spawn: arguments checked against the target, Task typed by what it gives ----------
assert_type(offload.spawn(resize, b"x", 3), Task[list[int]])
assert_type(offload.spawn(resize, b"x", width=3), Task[list[int]])
assert_type(offload.spawn(fetch, "u"), Task[bytes])
assert_type(offload.spawn(fetch, "u", retries=1), Task[bytes])
assert_type(offload.spawn(fetch("u")), Task[bytes])
offload.spawn(resize, "not bytes", 3)  # E
offload.spawn(resize, b"x")  # E
offload.spawn(fetch, "u", retry=1)  # E
offload.spawn(fetch("u"), 1)  # E

# -- every lane, a runtime, options() ----------------------------------------------------
assert_type(offload.threads.spawn(resize, b"", 1), Task[list[int]])
assert_type(offload.processes.spawn(resize, b"", 1), Task[list[int]])
assert_type(offload.background.spawn(fetch, "u"), Task[bytes])
assert_type(offload.loop.spawn(fetch("u")), Task[bytes])
assert_type(offload.threads.options(name="audit").spawn(resize, b"", 2), Task[list[int]])
offload.threads.spawn(resize, b"", "2")  # E
offload.threads.options(lane="elsewhere")  # E
rt = offload.Runtime()
assert_type(rt.spawn(resize, b"", 1), Task[list[int]])
assert_type(rt.background.run(fetch, "u"), Task[bytes])
rt.background.run(fetch, 1)  # E


# -- run: awaiting gives the result ------------------------------------------------------
async def handler() -> None:
    assert_type(await offload.run(resize, b"", 1), list[int])
    assert_type(await offload.run(fetch, "u"), bytes)
    assert_type(await offload.threads.run(resize, b"", 1), list[int])
    assert_type(await offload.spawn(fetch, "u"), bytes)
    await offload.run(fetch, b"u")  # E


# -- call: sync code running async code ---------------------------------------------------
assert_type(offload.call(fetch, "u"), bytes)
assert_type(offload.call(fetch("u"), timeout=2.0), bytes)
assert_type(offload.call(fetch, "u", timeout=2.0), bytes)
offload.call(fetch, 42)  # E
offload.call(fetch("u"), 1)  # E

# -- Task --------------------------------------------------------------------------------
task = offload.spawn(resize, b"", 1)
assert_type(task.result(1.0), list[int])
assert_type(task.exception(), BaseException | None)
assert_type(task.done(), bool)
assert_type(task.state, offload._engine.TaskState)
task.add_done_callback(lambda t: print(t.result()))
task.result("soon")  # E


# -- task controls -------------------------------------------------------------------------
controlled = offload.options(timeout=5, retries=3, backoff=offload.Backoff(0.1, 2.0, 10.0))
assert_type(controlled.spawn(resize, b"", 1), Task[list[int]])
assert_type(
    offload.threads.options(key="k", on_duplicate="reject").spawn(resize, b"", 1).attempt, int
)
assert_type(offload.get(task.id), offload.TaskInfo | None)
offload.options(timeout="5")  # E
offload.options(on_duplicate="ignore")  # E
offload.options(retries=1.5)  # E
offload.task(retries="3")  # E


# -- @offload.task keeps the signature ---------------------------------------------------
@offload.task
def report(day: str, *, full: bool = False) -> dict[str, int]:
    return {day: int(full)}


@offload.task(lane="background", name="warm")
async def warm(key: str) -> float:
    await asyncio.sleep(0)
    return 1.0


assert_type(report("d"), dict[str, int])
assert_type(report.spawn("d", full=True), Task[dict[str, int]])
assert_type(report.run("d"), Task[dict[str, int]])
assert_type(warm.spawn("k"), Task[float])
report.spawn(1)  # E
report.spawn("d", fully=True)  # E
warm.spawn()  # E
offload.task(lane="gpu")  # E


async def decorated() -> None:
    assert_type(await warm.run("k"), float)
    assert_type(await report.run("d"), dict[str, int])


# -- periodic work: offload.every / offload.cron / @offload.periodic ----------------------
def tick(region: str = "eu") -> None:
    pass


beat = offload.every(30, tick, "us", jitter=1.0, name="tick", overlap="queue", runtime=rt)
assert_type(beat, offload.Schedule)
assert_type(beat.next_run, datetime | None)
assert_type(beat.last_task, Task[Any] | None)
assert_type(beat.runs, int)
assert_type(beat.skipped, int)
assert_type(beat.name, str)
assert_type(beat.cancel(), bool)
assert_type(beat.as_dict(), dict[str, Any])
assert_type(offload.cron("*/5 * * * *", tick, tz="Europe/Paris"), offload.Schedule)
assert_type(rt.schedules(), list[offload.Schedule])
offload.every(30, tick, overlap="sometimes")  # E
offload.every("30", tick)  # E
offload.every(30, tick, lane="gpu")  # E
offload.cron(5, tick)  # E
offload.cron("* * * * *", tick, tz=5)  # E


@offload.periodic(every=60, overlap="allow")
def refresh() -> int:
    return 1


@offload.periodic(cron="0 3 * * *", tz="UTC", runtime=rt)
async def nightly() -> None:
    pass


assert_type(refresh(), int)  # the function itself, unchanged
offload.periodic(every=60, overlap="never")  # E
