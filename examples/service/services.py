"""The service layer: plain functions and classes the routes call.

Nothing here knows about FastAPI. Side work is handed to offload with `offload.spawn`
(or a specific lane) from wherever it happens: an async route, a sync route running in
FastAPI's threadpool, or a coroutine already running in the background.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import random
import threading
import time
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import offload

log = logging.getLogger("service")


# -- analytics (async, on the loop lane) ---------------------------------------------------
class EventRejected(Exception):
    """The analytics backend refused an event (here: an event name it doesn't know)."""


@dataclass
class Event:
    name: str
    user: str
    props: dict[str, Any] = field(default_factory=dict)


class Analytics:
    """A stand-in for an HTTP analytics backend; `record` is what a real client would await."""

    KNOWN = frozenset({"page_view", "add_to_cart", "checkout", "signup"})

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    async def record(self, event: Event) -> None:
        await asyncio.sleep(random.uniform(0.001, 0.005))  # the HTTP round trip
        if random.random() < 0.02:  # a transient failure: worth a retry
            raise ConnectionError("analytics backend timed out")
        if event.name not in self.KNOWN:
            raise EventRejected(f"analytics backend rejected unknown event {event.name!r}")
        self.counts[event.name] = self.counts.get(event.name, 0) + 1


# -- audit log (blocking file I/O, on the thread pool) -----------------------------------
class AuditLog:
    """Append-only JSON lines, fsync'ed: a blocking call that must stay off the event loop."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def write(self, action: str, **details: Any) -> None:
        line = json.dumps({"at": time.time(), "action": action, **details}, sort_keys=True)
        with self._lock, self.path.open("a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())


# -- product catalog cache (async refresh, on a background loop) -------------------------
class Catalog:
    """A cache of the product list, refreshed from a slow upstream off the request loop."""

    def __init__(self) -> None:
        self.products: list[dict[str, Any]] = []
        self.refreshed_at: float | None = None
        self.refreshes = 0

    async def refresh(self) -> None:
        await asyncio.sleep(0.05)  # the slow upstream call
        products = [{"sku": f"SKU-{i:03}", "price": round(5 + i * 1.25, 2)} for i in range(20)]
        self.products, self.refreshed_at = products, time.time()
        self.refreshes += 1


# -- mail (blocking, queued with BackgroundTasks by the signup route) --------------------
def send_welcome_email(address: str) -> None:
    time.sleep(0.005)  # an SMTP conversation
    log.debug("welcome email sent to %s", address)


# -- invoices: a durable task (written to the store before the order is confirmed) ----------
@offload.task(durable=True, retries=3, timeout=10)
def send_invoice(order_id: int, user: str, total: Decimal) -> None:
    time.sleep(0.002)  # render and mail the PDF
    log.debug("invoice for order %d (%s) sent to %s", order_id, total, user)


# -- orders: the service function routes call --------------------------------------------
@dataclass
class Order:
    id: int
    user: str
    sku: str
    quantity: int


class Orders:
    def __init__(self, audit: AuditLog, analytics: Analytics) -> None:
        self.audit = audit
        self.analytics = analytics
        self._ids = itertools.count(1)
        self.placed: dict[int, Order] = {}

    def place(self, user: str, sku: str, quantity: int) -> Order:
        """Record the order; the audit entry and the analytics event are side work."""
        order = Order(next(self._ids), user, sku, quantity)
        self.placed[order.id] = order
        offload.spawn(self.audit.write, "order.placed", **asdict(order))  # -> thread pool
        offload.spawn(self.analytics.record(Event("checkout", user, {"order": order.id})))
        return order

    def export(self, path: Path) -> int:
        """Write every order to `path` (blocking); returns how many were written."""
        orders = list(self.placed.values())
        with path.open("w", encoding="utf-8") as f:
            for order in orders:
                f.write(json.dumps(asdict(order)) + "\n")
        return len(orders)
