#!/usr/bin/env bash
# valgrind memcheck, two runs:
#   scenario  tools/valgrind_scenario.py: every lane, failures, cancellation, limits,
#             refusals, shutdown, then each scenario of the refleak hunt once;
#   model     the concurrent model/fuzz test (seeds 0-7: OFFLOAD_VALGRIND_SEEDS) and
#             tests/test_reliability.py (producer storm, cancel storm, close races).
# Fails on any error -- invalid access, use of uninitialised memory, bad free, definite
# leak -- any of whose stacks goes through offload's C code (tools/valgrind_report.py
# reads the XML). CPython's own reports are counted and printed, not judged. A seeded
# bug is checked first, so that "0 errors" means something.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
out=build/valgrind
mkdir -p "$out"
rm -f "$out"/*.xml "$out"/*.log "$out"/*.txt
started=$SECONDS

# memcheck NAME CMD...: run CMD under memcheck, XML to $out/NAME.xml.
# PYTHONMALLOC=malloc: every Python object is a malloc block valgrind tracks.
# Worker processes (the processes lane) run natively: no --trace-children.
memcheck() {
  local name=$1
  shift
  PYTHONMALLOC=malloc valgrind --tool=memcheck --leak-check=full --show-leak-kinds=definite \
    --errors-for-leak-kinds=definite --num-callers=40 --fullpath-after= \
    --xml=yes --xml-file="$out/$name.xml" --log-file="$out/$name.log" "$@"
}

# Canary: a seeded heap overflow (tools/sanitizer_canary.c, no sanitizer) must come out of
# valgrind_report.py as an error of "our" code, or a clean result below means nothing.
gcc -shared -fPIC -g -O1 tools/sanitizer_canary.c -o "$out/canary.so"
memcheck canary "$PY" tools/sanitizer_canary.py "$out/canary.so" canary_overflow \
  >/dev/null 2>&1 || true
if "$PY" tools/valgrind_report.py "$out/canary.xml" --ours 'canary\.so$' >"$out/canary.txt"; then
  cat "$out/canary.txt" >&2
  echo "valgrind: the canary's heap overflow went unreported: this check can't see bugs" >&2
  exit 1
fi
echo "valgrind: canary heap overflow reported: memcheck and the report see bugs here"

failed=0
status=0
memcheck scenario "$PY" tools/valgrind_scenario.py || status=$?
if ((status)); then
  echo "valgrind: the scenario itself failed (exit status $status); see $out/scenario.log" >&2
  failed=1
fi
echo -n "scenario: "
"$PY" tools/valgrind_report.py "$out/scenario.xml" || failed=1

status=0
OFFLOAD_FUZZ_SEEDS=${OFFLOAD_VALGRIND_SEEDS:-0-7} memcheck model \
  "$PY" -m pytest -q -p no:cacheprovider tests/reliability/test_model.py \
  tests/test_reliability.py || status=$?
if ((status)); then
  echo "valgrind: the model tests failed under memcheck (exit status $status)" >&2
  failed=1
fi
echo -n "model: "
"$PY" tools/valgrind_report.py "$out/model.xml" || failed=1

echo "valgrind: $((SECONDS - started)) s (logs and XML in $out/)"
exit "$failed"
