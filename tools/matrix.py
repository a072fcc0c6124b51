"""`make test-matrix`: the whole suite on every CPython offload claims to support.

For each minor version in SUPPORTED, find an interpreter on this machine (pyenv's
versions, then `python3.X` on PATH), give it its own virtualenv under build/matrix/,
install the test dependencies and a dev build of the engine (warnings are errors),
and run the suite except the browser test (Chromium is exercised by `make test`) and
the sanitizer runs (`make test-sanitize`). One line per interpreter:

    3.12.1: 541 passed
    3.10: absent (no python3.10 in pyenv or on PATH)

A claimed version that is absent is reported as absent, never as passed, and fails the
target unless OFFLOAD_MATRIX_ALLOW_ABSENT=1. OFFLOAD_MATRIX_JOBS=N runs N interpreters
at once (default 1): the suite spends much of its time waiting (subprocesses, servers,
timeouts), so on 2 cores two at a time take little more than one; it asserts behaviour,
never timings, so running beside another run is fine. OFFLOAD_MATRIX_MODES gives legs
an extra check to carry (see Mode): CI runs the 3.11 leg under asyncio's debug mode and
the 3.12 leg on the debug build, instead of running the suite twice more.
Usage: python tools/matrix.py [3.10 3.12 ...] [-- extra pytest args]
"""

from __future__ import annotations

import concurrent.futures
import glob
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUPPORTED = ("3.10", "3.11", "3.12", "3.13")
PYTEST_ARGS = ["-q", "-p", "no:cacheprovider", "--ignore-glob=*browser*"]
PIP = ["-m", "pip", "--disable-pip-version-check", "-q"]


def _works(python: str) -> str | None:
    """The full version of `python` if it runs (pyenv shims exist for absent ones)."""
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def find_interpreter(minor: str) -> tuple[str, str] | None:
    """(path, full version) of a CPython `minor` on this machine, or None."""
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates = sorted(glob.glob(f"{root}/versions/{minor}.*/bin/python{minor}"), reverse=True)
    on_path = shutil.which(f"python{minor}")
    if on_path:
        candidates.append(on_path)
    for path in candidates:
        version = _works(path)
        if version and version.rsplit(".", 1)[0] == minor:
            return path, version
    return None


def _run(cmd: list[str], log: Path, **env: str) -> bool:
    with log.open("a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        done = subprocess.run(
            cmd,
            cwd=ROOT,
            stdout=f,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            check=False,
        )
    return done.returncode == 0


@dataclass(frozen=True)
class Mode:
    """An extra check one leg of the matrix carries, so CI need not run the suite again
    for it (OFFLOAD_MATRIX_MODES="3.11=asyncio-debug,3.12=debug-build")."""

    label: str
    build_env: dict[str, str] = field(default_factory=dict)
    test_env: dict[str, str] = field(default_factory=dict)
    pytest_args: tuple[str, ...] = ()


MODES = {
    "plain": Mode(""),
    # as `make test-asyncio-debug`
    "asyncio-debug": Mode(
        " (asyncio debug, -W error)",
        test_env={"PYTHONASYNCIODEBUG": "1"},
        pytest_args=(
            "-W",
            "error",
            "-W",
            "ignore:Using `httpx` with `starlette.testclient` is deprecated:Warning",
        ),
    ),
    # as `make test-debug`: -O0 -g, assert() on
    "debug-build": Mode(" (debug build, asserts on)", build_env={"OFFLOAD_DEBUG": "1"}),
}


def modes_from_env() -> dict[str, Mode]:
    wanted = os.environ.get("OFFLOAD_MATRIX_MODES", "")
    chosen = {}
    for pair in filter(None, (p.strip() for p in wanted.split(","))):
        minor, _, name = pair.partition("=")
        if name not in MODES:
            raise SystemExit(f"matrix: unknown mode {name!r} (known: {', '.join(MODES)})")
        chosen[minor] = MODES[name]
    return chosen


def has_asserts(venv: Path) -> bool:
    """The installed engine calls __assert_fail: it was built with assert() on."""
    (so,) = venv.glob("lib/python3*/site-packages/offload/_engine*.so")
    return b"__assert_fail" in so.read_bytes()


def prepare_venv(python: str, venv: Path, log: Path, mode: Mode) -> bool:
    """A virtualenv with the test dependencies (kept between runs) and a fresh engine."""
    py = str(venv / "bin" / "python")
    stamp = venv / ".deps-stamp"
    if not stamp.exists() or stamp.stat().st_mtime < (ROOT / "pyproject.toml").stat().st_mtime:
        shutil.rmtree(venv, ignore_errors=True)
        steps = [
            [python, "-m", "venv", str(venv)],
            [py, *PIP, "install", "-U", "pip>=23", "setuptools>=77,<80", "wheel", "tomli>=2,<3"],
        ]
        if not all(_run(step, log) for step in steps):
            return False
        reqs = subprocess.run(
            [py, "tools/deps.py", "test"], cwd=ROOT, capture_output=True, text=True, check=False
        )
        if reqs.returncode != 0:
            log.open("a").write(reqs.stderr)
            return False
        (venv / "requirements.txt").write_text(reqs.stdout)
        if not _run([py, *PIP, "install", "-r", str(venv / "requirements.txt")], log):
            return False
        stamp.touch()
    # The sources are copied so setuptools' in-tree build/ cache of another CPython's
    # objects is never reused.
    src = venv / "src"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md", "csrc", "src"):
        target = ROOT / name
        (shutil.copytree if target.is_dir() else shutil.copy)(target, src / name)
    install = [py, *PIP, "install", "--no-deps", "--no-build-isolation", "--force-reinstall"]
    return _run([*install, str(src)], log, OFFLOAD_WERROR="1", **mode.build_env)


def summary(output: str) -> str:
    """pytest's closing counts ('541 passed, 2 skipped'), or what went wrong."""
    for line in reversed(output.splitlines()):
        m = re.search(r"(\d+ (passed|failed|errors?)[^=]*?)( in [\d.]+s.*)?$", line.strip("= "))
        if m and ("passed" in line or "failed" in line or "error" in line):
            return m.group(1).strip()
    return "no pytest summary (see the log)"


def run_one(minor: str, extra: list[str], mode: Mode) -> tuple[str, bool]:
    found = find_interpreter(minor)
    if found is None:
        return f"{minor}: absent (no python{minor} in pyenv or on PATH)", False
    python, version = found
    version += mode.label
    venv = ROOT / "build" / "matrix" / f"venv-{minor}"
    venv.parent.mkdir(parents=True, exist_ok=True)
    log = venv.parent / f"{minor}.log"
    log.write_text("")
    started = time.monotonic()
    if not prepare_venv(python, venv, log, mode):
        return f"{version}: could not build (log: {log.relative_to(ROOT)})", False
    if mode.build_env.get("OFFLOAD_DEBUG") and not has_asserts(venv):
        return f"{version}: the debug build has no assert() (log: {log.relative_to(ROOT)})", False
    test = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pytest", *PYTEST_ARGS, *mode.pytest_args, *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **mode.test_env},
        check=False,
    )
    log.open("a").write(test.stdout + test.stderr)
    took = time.monotonic() - started
    ok = test.returncode == 0
    return f"{version}: {summary(test.stdout)} ({took:.0f} s)", ok


def main(argv: list[str]) -> int:
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    wanted = argv or list(SUPPORTED)
    allow_absent = os.environ.get("OFFLOAD_MATRIX_ALLOW_ABSENT") == "1"
    jobs = max(1, int(os.environ.get("OFFLOAD_MATRIX_JOBS", "1")))
    modes = modes_from_env()
    ok = True
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        runs = [
            pool.submit(run_one, minor, extra, modes.get(minor, MODES["plain"])) for minor in wanted
        ]
        for run in runs:  # in the order asked, each as soon as it and those before end
            line, passed = run.result()
            print(line, flush=True)
            if not passed and not (allow_absent and "absent" in line):
                ok = False
    print("test-matrix:", "all supported CPythons passed" if ok else "FAILED", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
