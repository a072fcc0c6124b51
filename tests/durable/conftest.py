"""Fixtures and markers of the durable tier's tests."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "durable_heavy: a durable test with several worker processes and thousands of"
        " tasks (tens of seconds on a small machine); `-m 'not durable_heavy'` leaves it out",
    )
