#!/usr/bin/env bash
# valgrind memcheck on a short scenario; fails on any definite leak or invalid
# access whose stack goes through offload's C code (csrc/). CPython's own
# allocations at exit are not offload's business and are ignored.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
log=$(mktemp)
PYTHONMALLOC=malloc valgrind --tool=memcheck --leak-check=full --show-leak-kinds=definite \
  --num-callers=30 --log-file="$log" "$PY" tools/valgrind_scenario.py
python3 - "$log" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
blocks = re.split(r"\n==\d+== \n", text)
bad = [b for b in blocks
       if ("definitely lost" in b or "Invalid " in b or "uninitialised" in b)
       and re.search(r"csrc/|_engine\.cpython", b)]
summary = re.findall(r"definitely lost: .*", text)
print("valgrind:", summary[-1] if summary else "no leak summary",
      f"| reports involving offload's C code: {len(bad)}")
for b in bad[:5]:
    print(b)
sys.exit(1 if bad else 0)
PY
