"""`make demo`: run the example shop under uvicorn, drive a short load, show what ran where.

Starts `python -m service` (examples/service) on 127.0.0.1 and a free port, sends a few
thousand mixed requests with httpx (a few of them make a background task fail on
purpose), waits for the background work to finish, prints per-lane counts and latency
percentiles from the dashboard's JSON and the durable invoices' states from the store
(`python -m offload status`), then stops the server with SIGTERM and checks that it
drained and exited with status 0 and that every invoice succeeded. `make serve` runs the same service in the foreground.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

EXAMPLES = Path(__file__).resolve().parent
TOKEN = "demo-token"
REQUESTS = 3000
CONCURRENCY = 32
LOAD_BUDGET = 30.0  # seconds; the load stops early rather than overrun the demo

#: (weight, method, path, json body): the traffic mix. "cart_abandoned" is an event the
#: analytics backend doesn't know, so its background task fails (and shows up as such).
MIX: list[tuple[int, str, str, dict[str, Any] | None]] = [
    (40, "POST", "/events", {"name": "page_view", "user": "u{n}"}),
    (3, "POST", "/events", {"name": "cart_abandoned", "user": "u{n}"}),
    (25, "POST", "/orders", {"user": "u{n}", "sku": "SKU-007", "quantity": 2}),
    (10, "POST", "/signup", {"email": "u{n}@example.com"}),
    (12, "GET", "/catalog", None),
    (5, "POST", "/catalog/refresh", None),
    (5, "GET", "/orders/export", None),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


DATA_DIR = Path(tempfile.mkdtemp(prefix="offload-demo-"))
STORE = "sqlite:///" + str(DATA_DIR / "offload-shop" / "offload.db")


def start_server(port: int, log_path: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, OFFLOAD_DASHBOARD_TOKEN=TOKEN, SERVICE_DATA_DIR=str(DATA_DIR))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(EXAMPLES), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--no-access-log"]
    with log_path.open("wb") as log:
        return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


async def wait_ready(client: httpx.AsyncClient, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited early with status {server.returncode}")
        try:
            if (await client.get("/healthz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise SystemExit("the server did not become ready within 30 s")


async def drive_load(client: httpx.AsyncClient) -> tuple[Counter[str], int, float]:
    """Send REQUESTS requests from CONCURRENCY workers; count them by endpoint and status."""
    rng = random.Random(7)
    weights = [entry[0] for entry in MIX]
    plan = rng.choices(range(len(MIX)), weights=weights, k=REQUESTS)
    results: Counter[str] = Counter()
    errors = 0
    deadline = time.monotonic() + LOAD_BUDGET
    started = time.monotonic()

    async def worker(worker_id: int) -> None:
        nonlocal errors
        for n in range(worker_id, len(plan), CONCURRENCY):
            if time.monotonic() > deadline:
                return
            _, method, path, body = MIX[plan[n]]
            json = {k: v.format(n=n) if isinstance(v, str) else v for k, v in (body or {}).items()}
            try:
                response = await client.request(method, path, json=json if body else None)
                results[f"{method} {path} -> {response.status_code}"] += 1
            except httpx.HTTPError:
                errors += 1

    await asyncio.gather(*(worker(i) for i in range(CONCURRENCY)))
    return results, errors, time.monotonic() - started


async def wait_idle(client: httpx.AsyncClient) -> dict[str, Any]:
    """Poll the dashboard JSON until no task is pending or running (at most 20 s)."""
    deadline = time.monotonic() + 20
    while True:
        response = await client.get("/offload/api/snapshot", params={"token": TOKEN})
        response.raise_for_status()
        snapshot: dict[str, Any] = response.json()
        if snapshot["tasks"]["total"] == 0 or time.monotonic() > deadline:
            return snapshot
        await asyncio.sleep(0.2)


def ms(seconds: float, count: int) -> str:
    return f"{seconds * 1000:.2f}" if count else "-"


def print_lanes(snapshot: dict[str, Any]) -> None:
    columns = ["lane", "submitted", "succeeded", "failed", "cancelled", "retried"]
    columns += ["wait p50 ms", "wait p99 ms", "run p50 ms", "run p99 ms"]
    rows = []
    for name, lane in snapshot["lanes"].items():
        if lane["submitted"] == 0:
            continue
        wait, run = lane["queue_wait"], lane["run_time"]
        rows.append(
            [name, lane["submitted"], lane["succeeded"], lane["failed"], lane["cancelled"]]
            + [lane.get("retried", 0)]
            + [ms(wait["p50"], wait["count"]), ms(wait["p99"], wait["count"])]
            + [ms(run["p50"], run["count"]), ms(run["p99"], run["count"])]
        )
    print_table(columns, rows)


def print_table(columns: list[str], rows: list[list[Any]]) -> None:
    cells = [columns] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    for i, row in enumerate(cells):
        print(
            "  "
            + "  ".join(
                c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths))
            )
        )
        if i == 0:
            print("  " + "  ".join("-" * w for w in widths))


def stop_server(server: subprocess.Popen[bytes]) -> int:
    server.send_signal(signal.SIGTERM)
    try:
        return server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
        return -1


def shutdown_lines(log_path: Path) -> list[str]:
    text = log_path.read_text(encoding="utf-8", errors="replace")
    return [line for line in text.splitlines() if "offload: " in line and "shut" in line]


async def run_demo(base_url: str, server: subprocess.Popen[bytes]) -> tuple[bool, dict[str, Any]]:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        await wait_ready(client, server)
        print(f"Driving {REQUESTS} requests ({CONCURRENCY} concurrent) ...")
        results, errors, elapsed = await drive_load(client)
        sent = sum(results.values())
        print(f"  {sent} responses in {elapsed:.1f} s ({sent / elapsed:.0f}/s), {errors} errors")
        for key, count in sorted(results.items()):
            print(f"  {count:6}  {key}")
        snapshot = await wait_idle(client)
    ok = errors == 0 and all(key.split(" -> ")[1].startswith("2") for key in results)
    return ok, snapshot


def durable_states() -> dict[str, int]:
    """The durable store's task counts by state, as `python -m offload status` reads them."""
    out = subprocess.run(
        [sys.executable, "-m", "offload", "status", "--json", "--store", STORE],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return dict(json.loads(out.stdout)["by_state"])


def wait_durable_done() -> dict[str, int]:
    deadline = time.monotonic() + 20
    while True:
        states = durable_states()
        if states.get("queued", 0) + states.get("running", 0) == 0 or time.monotonic() > deadline:
            return states


def main() -> int:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log_path = Path(tempfile.gettempdir()) / "offload-demo-server.log"
    print(f"Starting the example service (examples/service) on {base_url}; log: {log_path}")
    server = start_server(port, log_path)
    try:
        ok, snapshot = asyncio.run(run_demo(base_url, server))
    except BaseException:
        server.kill()
        raise
    print("\nWhat ran where (from the dashboard JSON):")
    print_lanes(snapshot)
    print("  loop: analytics events (async, on the app's own loop; 5 s timeout, 2 retries)")
    print("  background: catalog refreshes (a dedicated event-loop thread; one at a time,")
    print("    key='catalog:refresh': a refresh asked for while one runs joins it)")
    print("  threads: audit-log writes, welcome emails, order exports, and the durable")
    print("    invoices once the store thread claimed them (the C thread pool)")
    failures = snapshot["failures"]
    if failures["items"]:
        latest = failures["items"][0]
        print(f"\n{failures['total']} task failures were reported, e.g. {latest['task_name']}:")
        print(f"  {latest['exception']}")
    states = wait_durable_done()
    print(f"\nDurable invoices (one per order, in {STORE}):")
    print("  " + ", ".join(f"{state} {count}" for state, count in states.items() if count))
    print(f"  python -m offload status --store {STORE}")
    print(f"\nDashboard: {base_url}/offload/?token={TOKEN}")
    print("  (the demo stops the server now; run `make serve` to keep one running)")
    status = stop_server(server)
    print(f"\nSIGTERM -> the server drained and exited with status {status}")
    for line in shutdown_lines(log_path):
        print(f"  {line}")
    if states.get("dead", 0) or states.get("queued", 0) or states.get("running", 0):
        print("demo FAILED: durable invoices did not all succeed", file=sys.stderr)
        return 1
    if status != 0 or not ok:
        print("demo FAILED: see the server log above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
