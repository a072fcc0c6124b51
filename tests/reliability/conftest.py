"""Fixtures and guards for the reliability tests.

Every test here also fails if asyncio logs anything that reads like lost work (a
stricter list than the suite-wide guard in tests/conftest.py, which also fails a test
on an exception escaping to sys.unraisablehook or threading.excepthook).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from .support import SANITIZER, assert_no_lost_work_messages


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "soak: a long-running load test (CI runs the small version; `make soak` the full one)",
    )
    config.addinivalue_line(
        "markers", "no_tsan: can't run under ThreadSanitizer (skipped by `make test-sanitize`)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        here = "tests/reliability/" in item.nodeid.replace("\\", "/")
        if here and SANITIZER == "tsan" and item.get_closest_marker("no_tsan"):
            item.add_marker(pytest.mark.skip(reason="not meaningful under ThreadSanitizer"))


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture(autouse=True)
def no_lost_work() -> Iterator[None]:
    """Stricter than the suite-wide guard of the same name (tests/conftest.py): here
    asyncio may not log anything that reads like lost work or an unseen error."""
    handler = _Collect()
    logger = logging.getLogger("asyncio")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
    assert_no_lost_work_messages("\n".join(handler.lines))
