"""`make test-upstream`: FastAPI's and Starlette's own background-task tests, import swapped.

Downloads the pinned FastAPI and Starlette sdists from the package index into
build/upstream/ (their tests ship in the sdists; nothing is copied into this repo),
unpacks fresh copies, swaps `BackgroundTasks` for `offload.fastapi.BackgroundTasks` in
the background-task tests (and in the docs apps the tutorial tests import), runs them
with pytest in this venv, and prints pass/fail per test id and a summary line.

Tests that assert FastAPI's sequential order or that a failing task skips the next are
offload's intended differences (docs/fastapi.md): they run and are reported as
"intended difference", never dropped, and don't fail the run.

    python tools/upstream.py              # one run
    python tools/upstream.py --repeat 200 # 200 fresh pytest sessions per project

Each repetition is a fresh pytest process: the upstream tests keep state in their
modules (FastAPI's test_dependency_contextmanager.py asserts on a module-level dict), so
repeating them inside one session would fail them with FastAPI's own class too.
"""

from __future__ import annotations

import argparse
import ast
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "upstream"

#: The versions tested; they must be the ones installed (pyproject's test extra).
PINNED = {"fastapi": "0.165.0", "starlette": "1.10.0"}

#: Per project: files whose BackgroundTasks import is swapped, and the tests to run.
SWAPS = {
    "fastapi": [
        "tests/test_dependency_contextmanager.py",
        "tests/test_response_dependency.py",
        "docs_src/background_tasks/tutorial001.py",
        "docs_src/background_tasks/tutorial002.py",
        "docs_src/background_tasks/tutorial002_non_an.py",
    ],
    "starlette": ["tests/test_background.py"],
}
TESTS = {
    "fastapi": [
        "tests/test_dependency_contextmanager.py",
        "tests/test_response_dependency.py",
        "tests/test_tutorial/test_background_tasks",
    ],
    "starlette": ["tests/test_background.py"],
}

#: Test ids (without parameters) that check what offload changes on purpose.
INTENDED = {
    "tests/test_background.py::test_multi_tasks_failure_avoids_next_execution": (
        "a failing task does not skip the next (each failure is reported on its own)"
    ),
    "tests/test_tutorial/test_background_tasks/test_tutorial002.py::test": (
        "asserts the order of two tasks appending to one file: tasks run concurrently"
        " (set `background_tasks.sequential = True` to keep the order)"
    ),
}

SWAP_LINE = (
    "from offload.fastapi import BackgroundTasks  # swapped in by offload's tools/upstream.py"
)

#: FastAPI's tests mark some tests for pytest-xdist, which these runs don't use.
MARKERS_PLUGIN = """
def pytest_configure(config):
    config.addinivalue_line("markers", "xdist_group(name): pytest-xdist grouping")
"""

#: What those tests need beyond this venv: Starlette's test client and test types import
#: httpx2 (without it starlette.testclient warns, an error under both sdists' settings).
#: Installed into build/upstream/site, seen only by these runs (this venv is untouched).
TEST_DEPS = ["httpx2==2.16.2", "httpcore2==2.16.2", "truststore==0.10.5", "idna==3.20"]
SITE = WORK / "site"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="run each test N times")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    check_installed()
    install_test_deps()
    results: dict[str, list[str]] = {}
    for project, version in PINNED.items():
        tree = unpack(project, version)
        for path in SWAPS[project]:
            swap_import(tree / path)
        results.update(run_tests(project, tree, args.repeat))
    return report(results, args.repeat)


def check_installed() -> None:
    for project, version in PINNED.items():
        installed = importlib.metadata.version(project)
        if installed != version:
            sys.exit(
                f"tools/upstream.py tests {project}=={version} but {installed} is installed;"
                f" update PINNED in tools/upstream.py (or install {project}=={version})"
            )


def install_test_deps() -> None:
    stamp = SITE / ".installed"
    if stamp.exists() and stamp.read_text(encoding="utf-8") == " ".join(TEST_DEPS):
        return
    shutil.rmtree(SITE, ignore_errors=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
        + ["--no-deps", "--target", str(SITE), *TEST_DEPS],
        check=True,
    )
    stamp.write_text(" ".join(TEST_DEPS), encoding="utf-8")


def unpack(project: str, version: str) -> Path:
    """A fresh, unmodified copy of the sdist (downloaded once into build/upstream/)."""
    WORK.mkdir(parents=True, exist_ok=True)
    sdist = WORK / f"{project}-{version}.tar.gz"
    if not sdist.exists():
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q"]
            + ["--no-deps", "--no-binary", ":all:", "-d", str(WORK), f"{project}=={version}"],
            check=True,
        )
    tree = WORK / "src" / f"{project}-{version}"
    shutil.rmtree(tree, ignore_errors=True)
    with tarfile.open(sdist) as archive:
        archive.extractall(WORK / "src", filter="data")
    (tree / "offload_markers_plugin.py").write_text(MARKERS_PLUGIN, encoding="utf-8")
    return tree


def swap_import(path: Path) -> None:
    """After each `from fastapi/starlette... import ..., BackgroundTasks, ...`, rebind it."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines(keepends=True)
    ends = [
        node.end_lineno
        for node in ast.parse(source).body
        if isinstance(node, ast.ImportFrom)
        and (node.module or "").split(".")[0] in ("fastapi", "starlette")
        and any(alias.name == "BackgroundTasks" and alias.asname is None for alias in node.names)
    ]
    if not ends:
        sys.exit(f"tools/upstream.py: no BackgroundTasks import to swap in {path}")
    for end in sorted(ends, reverse=True):
        assert end is not None
        lines.insert(end, SWAP_LINE + "\n")
    path.write_text("".join(lines), encoding="utf-8")


def run_tests(project: str, tree: Path, repeat: int) -> dict[str, list[str]]:
    """Outcomes per test id (one per repetition, each a fresh pytest process)."""
    junit = tree / "junit.xml"
    cmd = [sys.executable, "-m", "pytest", *TESTS[project], "-q", "-p", "no:cacheprovider"]
    cmd += ["-p", "offload_markers_plugin", f"--junitxml={junit}", "-o", "junit_family=xunit1"]
    print(f"== {project} x{repeat}: {' '.join(cmd[3:])}", flush=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tree), str(SITE)]))
    results: dict[str, list[str]] = defaultdict(list)
    for _ in range(repeat):
        junit.unlink(missing_ok=True)
        proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, check=False)
        if not junit.exists():
            print(proc.stdout[-4000:], proc.stderr[-4000:], sep="\n")
            sys.exit(f"tools/upstream.py: pytest did not run the {project} tests")
        if proc.returncode not in (0, 1):
            print(proc.stdout[-4000:], proc.stderr[-4000:], sep="\n")
        for test_id, outcome in outcomes(junit).items():
            results[test_id].extend(outcome)
    return results


def outcomes(junit: Path) -> dict[str, list[str]]:
    results: dict[str, list[str]] = defaultdict(list)
    for case in ET.parse(junit).getroot().iter("testcase"):
        test_id = f"{case.get('file')}::{case.get('name', '')}"
        if case.find("skipped") is not None:
            outcome = "skipped"
        elif case.find("failure") is not None or case.find("error") is not None:
            outcome = "failed"
        else:
            outcome = "passed"
        results[test_id].append(outcome)
    return results


def report(results: dict[str, list[str]], repeat: int) -> int:
    width = max(len(test_id) for test_id in results)
    counts = {"pass": 0, "FAIL": 0, "intended difference": 0, "skipped": 0}
    print(f"\n{'test':<{width}}  {'passed':>9}  result")
    for test_id in sorted(results):
        runs = results[test_id]
        passed = runs.count("passed")
        if runs.count("skipped") == len(runs):
            verdict = "skipped"
        elif intended_reason(test_id) is not None:
            verdict = "intended difference"
        else:
            verdict = "pass" if passed == len(runs) else "FAIL"
        counts[verdict] += 1
        print(f"{test_id:<{width}}  {passed:>4}/{len(runs):<4}  {verdict}")
    for test_id in sorted(results):
        reason = intended_reason(test_id)
        if reason is not None:
            print(f"  intended difference: {test_id}: {reason}")
    summary = ", ".join(f"{n} {verdict}" for verdict, n in counts.items())
    print(f"\nupstream ({repeat} run(s) each): {summary}")
    return 1 if counts["FAIL"] else 0


def intended_reason(test_id: str) -> str | None:
    base = test_id.split("[", 1)[0]
    return INTENDED.get(base)


if __name__ == "__main__":
    sys.exit(main())
