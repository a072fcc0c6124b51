"""The typing tests: mypy and pyright over tests/typing/*.py against the installed package.

In each file, every `assert_type(...)` must hold and every line ending in `# E` must be
reported as an error; no other line may be. Both checkers must agree with the file, so
a user's checker, whichever it is, checks calls against the target's parameters. First
a canary: a copy of a file with one `# E` marker removed must fail, which proves that
this check reads the checkers' output.

Usage: python tools/check_typing.py        (make lint runs it)
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FILES = sorted((ROOT / "tests" / "typing").glob("*.py"))
MARK = re.compile(r"#\s*E\s*$")
BIN = Path(sys.executable).parent


def expected_lines(path: Path) -> set[int]:
    lines = path.read_text().splitlines()
    return {n for n, line in enumerate(lines, 1) if MARK.search(line)}


def _errors(cmd: list[str], line_error: str, path: Path) -> tuple[set[int], str]:
    """Run a checker on `path`: the lines it reports errors on, and what it printed."""
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False).stdout
    pattern = re.escape(path.name) + line_error
    return {int(m.group(1)) for m in re.finditer(pattern, out)}, out


def mypy_errors(path: Path) -> tuple[set[int], str]:
    mypy = [str(BIN / "mypy"), "--strict", "--no-incremental", "--hide-error-context"]
    return _errors([*mypy, str(path)], r":(\d+): error:", path)


def pyright_errors(path: Path) -> tuple[set[int], str]:
    pyright = [str(BIN / "pyright"), "--pythonpath", sys.executable]
    return _errors([*pyright, str(path)], r":(\d+):\d+ - error:", path)


def check(path: Path) -> list[str]:
    """What is wrong with `path` according to each checker (empty: both agree)."""
    want = expected_lines(path)
    problems = []
    for checker, run in (("mypy", mypy_errors), ("pyright", pyright_errors)):
        got, out = run(path)
        if not got and not want:
            continue
        missing, extra = sorted(want - got), sorted(got - want)
        if missing:
            problems.append(f"{checker}: no error on expected line(s) {missing}")
        if extra:
            problems.append(f"{checker}: unexpected error on line(s) {extra}\n{out}")
    return problems


def canary(path: Path) -> bool:
    """A copy with its first `# E` marker dropped must be reported."""
    lines = path.read_text().splitlines()
    first = min(expected_lines(path)) - 1
    lines[first] = MARK.sub("", lines[first]).rstrip()
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / path.name
        copy.write_text("\n".join(lines) + "\n")
        return bool(check(copy))


def main() -> int:
    if not FILES:
        print("check_typing: no files in tests/typing", file=sys.stderr)
        return 1
    if not canary(FILES[0]):
        print("check_typing: the canary (an unmarked error) was not caught", file=sys.stderr)
        return 1
    failed = False
    for path in FILES:
        problems = check(path)
        marks = len(expected_lines(path))
        asserts = path.read_text().count("assert_type(") - 1  # minus the import
        status = "ok" if not problems else "FAILED"
        print(f"typing {path.relative_to(ROOT)}: {asserts} inferences, {marks} errors: {status}")
        for problem in problems:
            print("  " + problem)
        failed |= bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
