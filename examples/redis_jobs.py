"""The durable tasks of `make demo`'s Redis part (examples/redis_demo.py): each says
which worker process ran it, so the demo can show two workers sharing one queue."""

from __future__ import annotations

import os
import time

import offload


@offload.task(durable=True, retries=2)
def render_invoice(order: int, seconds: float) -> int:
    """Pretend to render an invoice; the id of the worker process that ran it."""
    time.sleep(seconds)
    return os.getpid()
