"""`make lint`'s check of the C sources (csrc/), rules no compiler flag enforces:

1. every file opens with a comment naming it and what it owns: `/* name.c: ...`;
2. no `PyErr_Fetch`/`PyErr_Restore` (deprecated since 3.12): `PyErr_GetRaisedException`
   and `PyErr_SetRaisedException`, which compat.h provides on older versions;
3. no function prototype outside a header: a `.c` file declares only `static` functions
   (what other files call is declared once, in the header that owns it).

First a canary: a copy of the sources with one violation of each rule seeded in must
fail each rule, which proves the check can see them. Usage: python tools/check_c.py
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEPRECATED = re.compile(r"\bPyErr_(Fetch|Restore)\s*\(")
# A top-level declaration ending in `;` with a parameter list: `int f(void);`
PROTOTYPE = re.compile(
    r"^(?!static\b)(?!typedef\b)(?!extern\s+struct\b)[A-Za-z_][\w\s\*]*?\b(\w+)\s*\([^;{}]*\)\s*;",
    re.MULTILINE,
)


def strip_comments(text: str) -> str:
    return re.sub(
        r"/\*.*?\*/|//[^\n]*", lambda m: re.sub(r"[^\n]", " ", m.group()), text, flags=re.DOTALL
    )


def check(csrc: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {"ownership": [], "deprecated": [], "prototype": []}
    for path in sorted([*csrc.glob("*.c"), *csrc.glob("*.h")]):
        text = path.read_text()
        if not text.startswith(f"/* {path.name}: "):
            found["ownership"].append(
                f"{path.name}: must open with '/* {path.name}: <what it owns>'"
            )
        code = strip_comments(text)
        if path.name != "compat.h":
            for m in DEPRECATED.finditer(code):
                line = code.count("\n", 0, m.start()) + 1
                found["deprecated"].append(f"{path.name}:{line}: PyErr_{m.group(1)}")
        if path.suffix == ".c":
            for m in PROTOTYPE.finditer(code):
                line = code.count("\n", 0, m.start()) + 1
                found["prototype"].append(
                    f"{path.name}:{line}: prototype of {m.group(1)}() outside a header"
                )
    return found


def canary() -> list[str]:
    """Rules that did NOT catch their seeded violation."""
    with tempfile.TemporaryDirectory() as tmp:
        csrc = Path(tmp) / "csrc"
        shutil.copytree(ROOT / "csrc", csrc)
        seeded = csrc / "zz_canary.c"
        seeded.write_text(
            '#include "common.h"\nint canary_fn(int x);\n'
            "static void f(void) { PyObject *a, *b, *c; PyErr_Fetch(&a, &b, &c); }\n"
        )
        found = check(csrc)
        return [rule for rule, hits in found.items() if not any("zz_canary" in h for h in hits)]


def main() -> int:
    blind = canary()
    if blind:
        print(f"check_c: the canary was not caught by: {', '.join(blind)}", file=sys.stderr)
        return 1
    found = check(ROOT / "csrc")
    problems = [hit for hits in found.values() for hit in hits]
    for hit in problems:
        print(f"check_c: {hit}")
    print(f"check_c: {len(problems)} problem(s) in csrc/ (canary caught by every rule)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
