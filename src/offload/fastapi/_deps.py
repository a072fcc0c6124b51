"""Which runtime serves a request: the one the app's lifespan started, else the default."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends
from starlette.requests import HTTPConnection

from .. import Runtime, default_runtime

#: Attribute of `app.state` where `offload.fastapi.lifespan` stores the app's runtime.
STATE_ATTR = "offload_runtime"


def runtime_of(app: Any) -> Runtime:
    """The runtime `offload.fastapi.lifespan` started for `app`, else `offload.default_runtime()`."""
    state = getattr(app, "state", None)
    runtime = getattr(state, STATE_ATTR, None)
    return runtime if isinstance(runtime, Runtime) else default_runtime()


async def get_runtime(conn: HTTPConnection) -> Runtime:
    """FastAPI dependency: the runtime of the app serving this request."""
    return runtime_of(conn.app)


#: Inject the app's runtime: `async def handler(offload: Offload): offload.spawn(...)`.
Offload = Annotated[Runtime, Depends(get_runtime)]
