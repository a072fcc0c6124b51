"""The C-level fuzz of the engine's deadline arithmetic (tests/c/fuzz_deadline.c over
csrc/deadline.h), compiled and run in `make test`; `make fuzz-deadline` (part of
`make test-sanitize`) runs 100x the draws."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "tests" / "c" / "fuzz_deadline.c"
BASE_FLAGS = ["-std=c11", "-Wall", "-Wextra", "-Werror", "-O1", "-g", f"-I{ROOT / 'csrc'}"]
SANITIZERS = ["-fsanitize=address,undefined,float-cast-overflow", "-fno-sanitize-recover=all"]


@pytest.fixture(scope="module")
def fuzzer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler")
    out = tmp_path_factory.mktemp("fuzz") / "fuzz_deadline"
    built = subprocess.run(
        [cc, *BASE_FLAGS, *SANITIZERS, str(SOURCE), "-lm", "-o", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    if built.returncode != 0:  # no sanitizer runtime: the checks still run
        built = subprocess.run(
            [cc, *BASE_FLAGS, str(SOURCE), "-lm", "-o", str(out)],
            capture_output=True,
            text=True,
            check=False,
        )
    assert built.returncode == 0, built.stderr
    return out


def test_the_fuzzer_catches_the_old_arithmetic(fuzzer: Path) -> None:
    run = subprocess.run(
        [str(fuzzer), "--canary"], capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "tv_nsec" in run.stderr and "must mean 'now'" in run.stderr


def test_deadline_arithmetic_holds_at_every_boundary(fuzzer: Path) -> None:
    run = subprocess.run(
        [str(fuzzer), "200000", "0x5eed"], capture_output=True, text=True, timeout=300, check=False
    )
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    assert " 0 failures" in run.stdout, run.stdout
