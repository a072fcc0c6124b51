"""A small shop API whose side work runs on offload. `make serve`, then open the dashboard.

POST /events            record an analytics event      -> loop lane (timeout, retries)
POST /orders            place an order (service layer) -> audit log on the thread pool,
                        and a durable invoice task (in DATA_DIR/offload.db first)
POST /signup            drop-in BackgroundTasks        -> email on threads, event on loop
POST /catalog/refresh   refresh the product cache      -> a background loop, one at a time (key)
(every 5 minutes)       the same refresh, @offload.periodic
GET  /catalog           the cached products
GET  /orders/export     a sync `def` route that spawns -> thread pool, then the home loop
GET  /offload/?token=.. the dashboard (token: $OFFLOAD_DASHBOARD_TOKEN, default demo-token)
GET  /jobs/{id}?token=.. one task's state, attempt, timings and error (same token)
GET  /metrics           Prometheus metrics
"""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Query, status
from pydantic import BaseModel, Field

import offload
import offload.fastapi
from offload.fastapi import (
    BackgroundTasks,
    Offload,
    dashboard_router,
    metrics_router,
    status_router,
)

from .services import (
    Analytics,
    AuditLog,
    Catalog,
    Event,
    Orders,
    send_invoice,
    send_welcome_email,
)

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
log = logging.getLogger("service")

DASHBOARD_TOKEN = os.environ.get("OFFLOAD_DASHBOARD_TOKEN", "demo-token")
DRAIN_TIMEOUT = float(os.environ.get("OFFLOAD_DRAIN_TIMEOUT", "10"))
DATA_DIR = Path(os.environ.get("SERVICE_DATA_DIR", tempfile.gettempdir())) / "offload-shop"

DATA_DIR.mkdir(parents=True, exist_ok=True)
#: Durable tasks (the invoices) live in an SQLite file: `python -m offload status --store ...`
STORE = "sqlite:///" + str(DATA_DIR / "offload.db")
offload.configure(threads=8, store=STORE)

analytics = Analytics()
audit = AuditLog(DATA_DIR / "audit.jsonl")
catalog = Catalog()
orders = Orders(audit, analytics)


@offload.task(lane="background", key="catalog:refresh")
async def refresh_catalog_once() -> None:
    """One catalog refresh at a time: a refresh asked for while one runs joins it."""
    await catalog.refresh()


#: Analytics calls time out after 5 s and are retried twice on transient errors
#: (an unknown event is the backend's final answer: not retried).
send_event = offload.loop.options(
    timeout=5, retries=2, backoff=offload.Backoff(0.01, 2, 0.5), retry_on=ConnectionError
)


@offload.periodic(every=300, name="catalog-refresh")
async def refresh_catalog_every_5_minutes() -> None:
    await refresh_catalog_once.spawn()


@asynccontextmanager
async def shop_lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Runs after offload started (so it may spawn) and, at exit, before offload drains.
    refresh_catalog_once.spawn()  # warm the cache without delaying startup
    log.info("shop started; audit log at %s", audit.path)
    yield
    log.info("shop stopping; %d orders placed", len(orders.placed))


app = FastAPI(
    title="offload example shop",
    lifespan=offload.fastapi.lifespan(shop_lifespan, drain_timeout=DRAIN_TIMEOUT),
)


def require_ops_token(
    token: Annotated[str | None, Query()] = None,
    x_ops_token: Annotated[str | None, Header()] = None,
) -> None:
    """Demo authorization for the dashboard: ?token=... or an X-Ops-Token header."""
    given = token or x_ops_token
    if given is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "dashboard token required")
    if not secrets.compare_digest(given, DASHBOARD_TOKEN):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "wrong dashboard token")


app.include_router(dashboard_router(authorize=require_ops_token), prefix="/offload")
app.include_router(status_router(dependencies=[Depends(require_ops_token)], prefix="/jobs"))
app.include_router(metrics_router())


class EventIn(BaseModel):
    name: str
    user: str
    props: dict[str, Any] = Field(default_factory=dict)


class OrderIn(BaseModel):
    user: str
    sku: str
    quantity: int = Field(gt=0)


class SignupIn(BaseModel):
    email: str


@app.get("/healthz")
async def healthz() -> dict[str, bool]:
    return {"ok": True}


@app.post("/events", status_code=status.HTTP_202_ACCEPTED)
async def record_event(event: EventIn) -> dict[str, int]:
    task = send_event.spawn(analytics.record, Event(event.name, event.user, event.props))
    return {"task": task.id}


@app.post("/orders", status_code=status.HTTP_201_CREATED)
async def place_order(order: OrderIn) -> dict[str, int]:
    placed = orders.place(order.user, order.sku, order.quantity)
    invoice = send_invoice.spawn(placed.id, order.user, Decimal("19.90") * order.quantity)
    await invoice.persisted()  # confirmed only once the invoice can't be lost
    return {"order": placed.id}


@app.post("/signup", status_code=status.HTTP_201_CREATED)
async def signup(user: SignupIn, background_tasks: BackgroundTasks) -> dict[str, str]:
    # The same code as with FastAPI's BackgroundTasks; only the import differs.
    background_tasks.add_task(send_welcome_email, user.email)
    background_tasks.add_task(analytics.record, Event("signup", user.email))
    return {"user": user.email}


@app.post("/catalog/refresh", status_code=status.HTTP_202_ACCEPTED)
async def refresh_catalog(runtime: Offload) -> dict[str, int]:
    task = runtime.background.options(key="catalog:refresh").spawn(catalog.refresh)
    return {"task": task.id}


@app.get("/catalog")
async def get_catalog() -> dict[str, Any]:
    return {"refreshed_at": catalog.refreshed_at, "products": catalog.products}


@app.get("/orders/export", status_code=status.HTTP_202_ACCEPTED)
def export_orders() -> dict[str, int]:
    # A sync route: FastAPI runs it in its threadpool, where no event loop runs.
    # offload.spawn sends the blocking export to the offload thread pool, and
    # offload.loop (from a thread without a loop) means the app's home loop.
    task = offload.options(key="orders:export", timeout=30).spawn(
        orders.export, DATA_DIR / "orders.jsonl"
    )
    offload.loop.spawn(analytics.record(Event("page_view", "ops", {"page": "export"})))
    return {"task": task.id}
