"""`python serve_for_tests.py APP [uvicorn options]`: uvicorn's CLI, status 0 after SIGTERM.

uvicorn re-raises SIGTERM after its graceful shutdown (status 143); like
examples/service/__main__.py, this exits 0 instead once the shutdown is done.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

import uvicorn.main


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.main.main(sys.argv[1:], prog_name="serve_for_tests.py")
