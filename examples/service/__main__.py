"""`python -m service [uvicorn options]`: uvicorn's command line for `service.app:app`.

One difference from running `uvicorn service.app:app`: after a graceful shutdown on
SIGTERM, the process exits with status 0. uvicorn re-raises the signal once it has shut
down, so by default the process ends "killed by SIGTERM" (status 143) even though every
request and every offload task was drained; supervisors that read the status as a crash
would be misled.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

import uvicorn.main


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    # Reached when uvicorn re-raises SIGTERM after its graceful shutdown (or when SIGTERM
    # comes before the server started, when there is nothing to drain either).
    raise SystemExit(0)


def main() -> None:
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.main.main(["service.app:app", *sys.argv[1:]], prog_name="python -m service")


if __name__ == "__main__":
    main()
