"""What a user installs: plain `pip install` on every CPython, the sdist, the wheels.

A user's build shows compiler warnings but never fails on them; ours (OFFLOAD_WERROR=1,
set by the Makefile) does. Each test builds in fresh virtualenvs from a copy of the
sources, with the environment a user has (no OFFLOAD_* switches, no CFLAGS), reaching
nothing beyond the package index. `make test-matrix` skips this folder: it is about the
interpreters themselves, and covers each one here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
from matrix import SUPPORTED, find_interpreter

pytestmark = pytest.mark.timeout(600)

#: Run by the installed package in each fresh venv: the engine loads and every kind of
#: lane runs a task.
SMOKE = """
import asyncio, sys, offload
async def twice(x):
    await asyncio.sleep(0)
    return 2 * x
async def main():
    assert await offload.run(sum, [1, 2, 3]) == 6
    assert await offload.run(twice, 21) == 42
    assert await offload.background.run(twice, 4) == 8
    await offload.shutdown(10)
asyncio.run(main())
print("offload works on", sys.version.split()[0])
"""


def user_env(**extra: str) -> dict[str, str]:
    """The environment of a user running pip: none of our build switches."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OFFLOAD_")}
    for name in ("CFLAGS", "CPPFLAGS", "PYTHONPATH"):
        env.pop(name, None)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return {**env, **extra}


def run(cmd: list[str | Path], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in cmd],
        capture_output=True,
        text=True,
        env=user_env(**env),
        timeout=500,
        check=False,
    )


def must(cmd: list[str | Path], **env: str) -> str:
    done = run(cmd, **env)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout + done.stderr


def copy_sources(dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in ("setup.py", "pyproject.toml", "README.md", "csrc", "src"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("*.egg-info", "*.so"))
        else:
            shutil.copy(src, dest / name)
    return dest


def fresh_venv(python: str, where: Path) -> Path:
    must([python, "-m", "venv", where])
    return where / "bin" / "python"


@pytest.mark.parametrize("minor", SUPPORTED)
def test_plain_pip_install_works_on_every_supported_cpython(minor: str, tmp_path: Path) -> None:
    """`pip install .` with no flags, as a user would: builds without -Werror, imports, runs."""
    found = find_interpreter(minor)
    if found is None:  # `make test-matrix` fails on an absent interpreter; this test says why
        pytest.skip(f"python{minor} is not on this machine (pyenv or PATH)")
    python, version = found
    py = fresh_venv(python, tmp_path / "venv")
    built = must([py, "-m", "pip", "install", "-v", copy_sources(tmp_path / "src")])
    compile_lines = [line for line in built.splitlines() if " -c csrc/" in line]
    assert compile_lines, "pip's verbose output shows no compiler call"
    assert all("-Wall" in line and "-Werror" not in line for line in compile_lines)
    assert f"offload works on {version}" in must([py, "-c", SMOKE])


def test_a_compiler_warning_shows_but_never_fails_a_users_build(tmp_path: Path) -> None:
    """A deprecation injected into the C code (-DOFFLOAD_TEST_WARNING): a user's build
    prints it and still installs; our build (OFFLOAD_WERROR=1) refuses it, which proves
    the warning is real."""
    src = copy_sources(tmp_path / "src")
    py = fresh_venv(sys.executable, tmp_path / "venv")
    wheel = [py, "-m", "pip", "wheel", "-v", "--no-deps", "--wheel-dir", tmp_path / "w", src]
    inject = {"CFLAGS": "-DOFFLOAD_TEST_WARNING"}

    ours = run(wheel, OFFLOAD_WERROR="1", **inject)
    assert ours.returncode != 0
    assert "offload test warning" in ours.stdout + ours.stderr
    assert "-Werror" in ours.stdout + ours.stderr

    users = must(wheel, **inject)
    assert "offload test warning" in users
    (built,) = (tmp_path / "w").glob("offload-*.whl")
    must([py, "-m", "pip", "install", built])
    assert "offload works on" in must([py, "-c", SMOKE])


def test_dist_gives_a_manylinux_wheel_and_an_sdist_that_install_cleanly(tmp_path: Path) -> None:
    """tools/dist.py (`make dist`) for this interpreter: the repaired wheel is manylinux and
    installs and runs in a clean venv; the sdist does too, and its `fastapi` extra pulls
    in what offload.fastapi needs."""
    out = tmp_path / "dist"
    log = must(
        [sys.executable, ROOT / "tools" / "dist.py", "--out", out, "--python", sys.executable]
    )
    (wheel,) = out.glob("offload-*.whl")
    (sdist,) = out.glob("offload-*.tar.gz")
    assert "manylinux" in wheel.name
    assert f"{wheel.name}  (auditwheel show: manylinux_" in log
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("offload/_engine") and n.endswith(".so") for n in names)
    assert "offload/py.typed" in names

    py = fresh_venv(sys.executable, tmp_path / "wheel-venv")
    must([py, "-m", "pip", "install", wheel])
    assert "offload works on" in must([py, "-c", SMOKE])
    no_extra = run([py, "-c", "import offload.fastapi"])
    assert no_extra.returncode != 0
    assert "pip install 'offload[fastapi]'" in no_extra.stderr

    py = fresh_venv(sys.executable, tmp_path / "sdist-venv")
    must([py, "-m", "pip", "install", f"offload[fastapi] @ {sdist.as_uri()}"])
    assert "offload works on" in must([py, "-c", SMOKE])
    must([py, "-c", "import fastapi, offload.fastapi; offload.fastapi.BackgroundTasks"])
