"""Read valgrind memcheck's XML (tools/valgrind.sh) and judge it.

Every error is read whole: its main stack and its auxiliary ones ("Address ... is 16 bytes
inside a block of size 64 free'd at ...", "Block was alloc'd at ..."), so a use-after-free
that shows up in CPython's code but was caused by offload freeing an object early counts
as offload's. An error is offload's if any frame of any of its stacks is in the engine
(offload/_engine*.so, or a csrc/ source file when built with -g). Those fail the run;
CPython's own (uninitialised reads at start-up, allocations it keeps until exit) are
counted and printed, not judged.

Usage: python tools/valgrind_report.py MEMCHECK.xml [--ours REGEX]
(--ours: which object files count as offload's; tools/valgrind.sh's canary uses it.)
"""

from __future__ import annotations

import argparse
import re
import sys
import xml.etree.ElementTree as ET
from collections import Counter

ENGINE = re.compile(r"offload/_engine[^/]*\.so$")


def frame_text(frame: ET.Element) -> str:
    fn = frame.findtext("fn") or "???"
    where = frame.findtext("file")
    if where:
        where = f"{frame.findtext('dir', '')}/{where}:{frame.findtext('line', '?')}"
    else:
        where = frame.findtext("obj") or "?"
    return f"{fn} ({where})"


def in_engine(frame: ET.Element, ours: re.Pattern[str] = ENGINE) -> bool:
    obj = frame.findtext("obj") or ""
    directory = frame.findtext("dir") or ""
    return bool(ours.search(obj)) or (ours is ENGINE and directory.rstrip("/").endswith("csrc"))


def describe(error: ET.Element) -> str:
    what = error.findtext("what") or error.findtext("xwhat/text") or "?"
    lines = [f"{error.findtext('kind')}: {what}"]
    for child in error:
        if child.tag == "stack":
            lines += [f"    {frame_text(f)}" for f in child.findall("frame")[:16]]
        elif child.tag in ("auxwhat", "xauxwhat"):
            lines.append(f"  {child.findtext('text') if child.tag == 'xauxwhat' else child.text}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("xml")
    parser.add_argument("--ours", type=re.compile, default=ENGINE)
    args = parser.parse_args()
    root = ET.parse(args.xml).getroot()
    errors = root.findall("error")
    ours, theirs = [], Counter[str]()
    for error in errors:
        frames = [f for stack in error.findall("stack") for f in stack.findall("frame")]
        if any(in_engine(f, args.ours) for f in frames):
            ours.append(error)
        else:
            theirs[error.findtext("kind") or "?"] += 1
    definitely_lost = sum(
        int(e.findtext("xwhat/leakedbytes") or 0)
        for e in errors
        if e.findtext("kind") == "Leak_DefinitelyLost"
    )
    print(
        f"valgrind: {len(ours)} error(s) involving offload's C code; "
        f"{definitely_lost} bytes definitely lost in all; "
        f"CPython's own, not judged: {dict(theirs) or 'none'}"
    )
    for error in ours[:10]:
        print(describe(error))
    return 1 if ours else 0


if __name__ == "__main__":
    sys.exit(main())
