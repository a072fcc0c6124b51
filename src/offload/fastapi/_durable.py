"""The durable tier as the status router, the dashboard and the metrics see it:
whether this process uses one, and its records as JSON-ready dicts.

"In use" means this runtime's durable tier is open (its store thread started: the
runtime started with a store configured, or something was spawned durably). Nothing
here opens a store: a status request never creates ./offload.db.

A stored result is decoded without importing its function (a status request must not
import modules named in the store) and shown only if it is JSON; otherwise its repr,
and if even that raises, a placeholder. A user's __repr__ may raise at any moment.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import TYPE_CHECKING, Any

from .. import Runtime

if TYPE_CHECKING:
    from ..durable._api import Durable
    from ..durable._store import Depths, TaskRecord

#: What the endpoints say when the runtime has no durable tier in use.
NOT_IN_USE = (
    "the durable tier is not in use in this process: no store configured (store= or"
    " OFFLOAD_STORE) and nothing spawned durably"
)
#: A result's repr is cut to this many characters.
_REPR_MAX = 1000


def durable_of(runtime: Runtime) -> Durable | None:
    """The runtime's durable tier if it is open, else None (never opens it)."""
    durable = runtime._durable
    if durable is None or not durable.started:
        return None
    return durable


def depths_dict(depths: Depths) -> dict[str, Any]:
    age = depths.oldest_ready_age
    return {
        "by_state": dict(depths.by_state),
        "ready": depths.ready,
        "scheduled": depths.scheduled,
        "leases": {"live": depths.leases, "expired": depths.expired_leases},
        "oldest_ready_age": None if age is None or not math.isfinite(age) else age,
    }


def summary(durable: Durable, depths: Depths) -> dict[str, Any]:
    """`GET .../durable`: the queue (all processes sharing the store) and this process."""
    return {
        "enabled": True,
        "store": durable.shown_url,
        **depths_dict(depths),
        "process": stats(durable),
    }


def stats(durable: Durable) -> dict[str, Any]:
    return {k: v for k, v in durable.stats().items() if k != "store"}


def task_dict(durable: Durable, record: TaskRecord, *, with_result: bool) -> dict[str, Any]:
    """A stored task as `DurableInfo` fields, `result` only if JSON (else `result_repr`)."""
    info = durable._info(dataclasses.replace(record, result=None))
    item = {f.name: getattr(info, f.name) for f in dataclasses.fields(info) if f.name != "result"}
    item["has_result"] = record.result is not None
    if with_result:
        item.update(_result_fields(durable, record))
    return item


def _result_fields(durable: Durable, record: TaskRecord) -> dict[str, Any]:
    if record.result is None:
        return {"result": None}
    from ..durable._codec import codec_for

    try:
        value = codec_for(record.codec, durable._signing_key).decode_result(None, record.result)
    except Exception as exc:  # noqa: BLE001 (a result we cannot read is shown as such)
        return {"result": None, "result_error": f"cannot decode the result: {_describe(exc)}"}
    try:
        json.dumps(value, allow_nan=False)
    except Exception:  # noqa: BLE001 (not JSON, or its encoding raised: show the repr)
        return {"result": None, "result_repr": safe_repr(value)}
    return {"result": value}


def safe_repr(value: Any) -> str:
    """repr(value), cut to a readable length; a placeholder if the repr raises."""
    try:
        text = repr(value)
        if not isinstance(text, str):
            raise TypeError("__repr__ returned a non-str")
    except Exception:  # noqa: BLE001 (a user's __repr__ may raise)
        return f"<{_type_name(value)} object (its repr raised)>"
    return text if len(text) <= _REPR_MAX else text[: _REPR_MAX - 3] + "..."


def _describe(exc: BaseException) -> str:
    try:
        return f"{_type_name(exc)}: {exc}"
    except Exception:  # noqa: BLE001 (its __str__ raised)
        return _type_name(exc)


def _type_name(value: Any) -> str:
    try:
        return str(type(value).__name__)
    except Exception:  # noqa: BLE001
        return "object"
