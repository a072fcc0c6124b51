"""The soak of `make soak` (tools/soak.py, 1,000,000 tasks), CI-sized: 40,000 tasks from 8
long-lived producer threads over the loop, background and threads lanes, with every
admission policy at work (block, drop, reject), failures and cancels. Every attempt must
be accounted for lane by lane, every failure reported once and every drop logged once.
Also run under ASan and TSan by `make test-sanitize`. (RSS is checked by the full soak
only: in a pytest process it depends on every other test.)"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

import pytest

from .support import ROOT, scaled


def load_soak() -> ModuleType:
    spec = importlib.util.spec_from_file_location("offload_tools_soak", ROOT / "tools" / "soak.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.soak
def test_soak_accounts_for_every_task_on_every_lane() -> None:
    soak = load_soak()
    result = soak.run(tasks=scaled(40_000, 8_000), producers=8, waves=4, check_rss=False)
    assert result.ok, soak.report(result)
    assert sum(s["submitted"] for s in result.stats.values()) == result.tasks
    # every policy was exercised
    assert result.stats["threads"]["cancelled"] > 0
    assert result.stats["threads"]["failed"] > 0
    assert result.stats["background"]["dropped"] + result.stats["loop"]["rejected"] > 0
