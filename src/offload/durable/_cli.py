"""`python -m offload`: a standalone durable worker, and the operators' commands.

    python -m offload worker --store sqlite:///app.db --import myapp.tasks
    python -m offload status --store sqlite:///app.db
    python -m offload dlq list|retry|purge --store sqlite:///app.db [ID ...] [--all]

The store defaults to OFFLOAD_STORE, else ./offload.db (as for the app).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import logging
import os
import signal
import sys
import time
from dataclasses import asdict
from typing import Any

from ._api import resolve_store_url
from ._store import StoreError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m offload", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    worker = commands.add_parser("worker", help="work a durable store's queue until SIGTERM")
    _store_arg(worker)
    worker.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="a module that defines the task functions (repeatable)",
    )
    worker.add_argument("--concurrency", type=int, default=32, help="attempts at once")
    worker.add_argument("--lease", type=float, default=30.0, help="lease seconds")
    worker.add_argument(
        "--durability",
        choices=("normal", "full"),
        default="normal",
        help="full: fsync every group commit (outcomes survive a power loss)",
    )
    worker.add_argument(
        "--shutdown-timeout",
        type=float,
        default=10.0,
        help="on SIGTERM, how long running tasks get before they are released",
    )
    worker.add_argument("--threads", type=int, default=None, help="threads lane size")
    worker.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    worker.add_argument(
        "--signing-key-env",
        default="OFFLOAD_SIGNING_KEY",
        help="environment variable holding the pickle signing key",
    )

    status = commands.add_parser("status", help="queue depths, leases, oldest task age")
    _store_arg(status)
    status.add_argument("--json", action="store_true")

    dlq = commands.add_parser("dlq", help="the dead-letter set")
    dlq.add_argument("action", choices=("list", "retry", "purge"))
    dlq.add_argument("ids", nargs="*", help="task ids (retry/purge)")
    dlq.add_argument("--all", action="store_true", help="every dead-lettered task")
    dlq.add_argument("--limit", type=int, default=50)
    dlq.add_argument("--json", action="store_true")
    _store_arg(dlq)
    return parser


def _store_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        default=None,
        help="sqlite:///path.db or redis://host:6379/0 (default: OFFLOAD_STORE or ./offload.db)",
    )


class _UsageError(Exception):
    """Bad input on the command line: said on stderr, exit status 2, no traceback."""


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit status: 0 done, 1 failed (the store, a task module),
    2 bad input (options, a store URL, missing ids). User errors never print a traceback."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        store = resolve_store_url(args.store)
        if args.command == "worker":
            return _worker(args, store)
        return _operate(args, store)
    except _UsageError as exc:
        print(f"offload: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"offload: {exc}", file=sys.stderr)
        return 1


def _operate(args: argparse.Namespace, store: str) -> int:
    runtime = _runtime(store=store, durable_concurrency=0)
    try:
        _require_existing(store)
        if args.command == "status":
            return _status(runtime, args)
        return _dlq(runtime, args)
    finally:
        runtime.close(5)


def _runtime(**options: Any) -> Any:
    """A Runtime with these options; an option it refuses is a usage error."""
    import offload

    try:
        return offload.Runtime(**options)
    except (TypeError, ValueError) as exc:
        raise _UsageError(str(exc)) from None


def _require_existing(store: str) -> None:
    """status and dlq read a store: a mistyped path is an error, not a new empty store."""
    if store.startswith("sqlite:///"):
        path = store[len("sqlite:///") :]
        if not os.path.exists(path):
            raise StoreError(
                f"no durable store at {os.path.abspath(path)!r} ({store}): check --store"
                " or OFFLOAD_STORE (a worker or a durable spawn creates it)"
            )


def _import_task_modules(modules: list[str]) -> None:
    sys.path.insert(0, os.getcwd())
    for module in modules:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name is None or not (module == exc.name or module.startswith(exc.name + ".")):
                raise  # the module itself imports something missing: its traceback helps
            raise _UsageError(
                f"cannot import {module}: {exc} (run the worker from the directory that"
                " holds it, or set PYTHONPATH)"
            ) from None


def settle_heap() -> None:
    """Move everything alive after start-up (the modules, the task modules, the
    runtime) out of the collector's sight (`gc.freeze()`): each full collection then
    walks only what the work made. In a worker the tens of thousands of start-up
    objects made every full collection a pause of about 7 ms, the p99 of its
    enqueue-to-start latency (docs/benchmarks.md)."""
    gc.collect()
    gc.freeze()


def _worker(args: argparse.Namespace, store: str) -> int:
    import offload

    _import_task_modules(args.imports)
    options: dict[str, Any] = {
        "store": store,
        "durable_concurrency": args.concurrency,
        "lease": args.lease,
        "durability": args.durability,
        "shutdown_timeout": args.shutdown_timeout,
        "signing_key": os.environ.get(args.signing_key_env) or None,
    }
    if args.threads is not None:
        options["threads"] = args.threads
    try:
        offload.configure(**options)
    except (TypeError, ValueError) as exc:
        raise _UsageError(str(exc)) from None
    if args.loop == "uvloop":
        import uvloop

        return uvloop.run(_work(args))
    return asyncio.run(_work(args))


async def _work(args: argparse.Namespace) -> int:
    import offload

    runtime = offload.default_runtime()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        runtime.start(loop)
        runtime.durable.start()
    except BaseException:
        await runtime.shutdown(args.shutdown_timeout)
        raise
    settle_heap()
    log = logging.getLogger("offload")
    log.info(
        "offload worker %d: working %s (concurrency %d)",
        os.getpid(),
        runtime.durable.shown_url,
        args.concurrency,
    )
    await stop.wait()
    log.info(
        "offload worker %d: stopping (shutdown timeout %g s)", os.getpid(), args.shutdown_timeout
    )
    await runtime.shutdown(args.shutdown_timeout)
    return 0


def _status(runtime: Any, args: argparse.Namespace) -> int:
    depths = runtime.durable.depths()
    if args.json:
        print(json.dumps(asdict(depths)))
        return 0
    print(f"store: {runtime.durable.shown_url}")
    for state, count in depths.by_state.items():
        print(f"  {state:<10} {count}")
    print(f"  ready now  {depths.ready}   scheduled {depths.scheduled}")
    print(f"  leases     {depths.leases} live, {depths.expired_leases} expired")
    age = depths.oldest_ready_age
    print(f"  oldest ready task waited {'-' if age is None else f'{age:.3f} s'}")
    return 0


def _dlq(runtime: Any, args: argparse.Namespace) -> int:
    durable = runtime.durable
    if args.action == "list":
        dead = durable.tasks("dead", args.limit)
        if args.json:
            print(json.dumps([{k: v for k, v in asdict(t).items() if k != "result"} for t in dead]))
            return 0
        for t in dead:
            last = (t.error or "").strip().splitlines()[-1:] or [""]
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t.finished or t.created))
            print(f"{t.id}  {when}  {t.name}  attempts {t.attempt}/{t.max_attempts}  {last[0]}")
        print(f"{len(dead)} dead-lettered task(s) shown")
        return 0
    if args.ids and args.all:
        raise _UsageError("name the task ids or pass --all, not both")
    if not args.ids and not args.all:
        raise _UsageError("name the task ids, or pass --all")
    ids = None if args.all else list(dict.fromkeys(args.ids))
    missing = [] if ids is None else _not_dead(durable, ids)
    if args.action == "retry":
        print(f"{durable.retry_dead(ids)} task(s) queued again")
    else:
        print(f"{durable.purge('dead', ids)} task(s) purged")
    if missing:
        print(f"offload: not in the dead-letter set: {', '.join(missing)}", file=sys.stderr)
        return 1
    return 0


def _not_dead(durable: Any, ids: list[str]) -> list[str]:
    """The ids (with what they are instead) that name no dead-lettered task."""
    # The stored records, not get(): nothing here needs a result decoded.
    records = durable._call(lambda store: [store.get(task_id) for task_id in ids])
    return [
        f"{task_id} ({'unknown' if record is None else record.state})"
        for task_id, record in zip(ids, records, strict=True)
        if record is None or record.state != "dead"
    ]
