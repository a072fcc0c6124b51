"""Fuzz of the engine's own option parsing: `_engine.Engine(options)` fed random
dicts of boundary values straight (no Python validation in front), in a child
interpreter so a crash fails the test. Each must be refused with TypeError,
ValueError or OverflowError, or give an engine whose lanes run a task, report
stats and shut down within a bounded wait, whatever the timeouts given to it."""

from __future__ import annotations

import pytest

from .support import run_python

FUZZ = """
import math, random, sys, time
from offload import _engine

VALUES = [None, 0, 1, 2, -1, -0.0, 0.0, 5e-324, 1e-9, 0.5, 1.0, 30, 4096, 4097, 256, 257,
          2**31, 2**63 - 1, 2**63, 2**64, 2**70, -2**63, math.inf, -math.inf, math.nan,
          1e19, sys.float_info.max, True, "1", b"x", [], {}, object()]
KEYS = ["threads", "min_threads", "idle_timeout", "background_loops", "max_pending",
        "max_running", "on_full"]
LANE_KEYS = ["max_pending", "max_running", "on_full"]
ON_FULL = ["reject", "drop", "block", "wait", None, 3]
rng = random.Random(int(sys.argv[1]))
accepted = refused = 0
for i in range(int(sys.argv[2])):
    opts = {k: rng.choice(VALUES) for k in KEYS if rng.random() < 0.6}
    if "on_full" in opts:
        opts["on_full"] = rng.choice(ON_FULL)
    if rng.random() < 0.5:
        opts["lanes"] = {
            lane: {k: rng.choice(ON_FULL if k == "on_full" else VALUES)
                   for k in LANE_KEYS if rng.random() < 0.5}
            for lane in ("loop", "background", "threads", "processes") if rng.random() < 0.5
        }
    try:
        engine = _engine.Engine(opts)
    except (TypeError, ValueError, OverflowError):
        refused += 1
        continue
    accepted += 1
    task = engine.threads.spawn(sum, [1, 2])
    if engine.stats()["threads"]["max_pending"] != 0:
        assert task._wait(10) and task.state == "succeeded", (opts, task.state)
    engine.stats()
    engine._close()
    engine._request_stop()
    for timeout in (rng.choice([0, 0.0, -1, math.nan, 1e-9, 5.0]),):
        engine._join(timeout)
    assert engine._join(10), opts
print("accepted", accepted, "refused", refused)
"""


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_engine_options_fuzz(seed: int) -> None:
    proc = run_python(f"import sys; sys.argv = ['fuzz', {seed}, 150]\n" + FUZZ, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("accepted"), proc.stdout


def test_join_takes_any_timeout() -> None:
    """`_join(inf)`, `_join(1e19)`, `_join(nan)`: the join deadline saturates."""
    proc = run_python(
        """
        import math
        from offload import _engine
        e = _engine.Engine({})
        e.threads.spawn(sum, [1])._wait(10)
        e._close()
        e._request_stop()
        for t in (math.nan, -1.0, 0.0, 1e19, math.inf, 2**80):
            assert e._join(t) in (True, False)
        assert e._join(math.inf)
        print("OK")
        """,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "OK"
