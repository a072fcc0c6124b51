#!/usr/bin/env bash
# Build the C engine with sanitizers and run tests against it.
#   tools/sanitize.sh asan [pytest args...]   AddressSanitizer + UndefinedBehaviorSanitizer
#   tools/sanitize.sh tsan [pytest args...]   ThreadSanitizer
# The instrumented package is assembled in build/sanitize-<kind>/ and put first on
# PYTHONPATH, so the normal .venv install is left untouched.
set -euo pipefail
cd "$(dirname "$0")/.."
kind=$1; shift
PY=${PY:-.venv/bin/python}
out=build/sanitize-$kind
case $kind in
  asan) flags=address,undefined
        runtime="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
        export ASAN_OPTIONS=detect_leaks=0:abort_on_error=0:halt_on_error=1:exitcode=99
        export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:exitcode=99
        export PYTHONMALLOC=malloc ;;
  tsan) flags=thread
        runtime="$(gcc -print-file-name=libtsan.so)"
        export TSAN_OPTIONS="halt_on_error=1:exitcode=99:suppressions=$PWD/tools/tsan.supp:report_signal_unsafe=0"
        ;;
  *) echo "usage: $0 asan|tsan [pytest args]" >&2; exit 2 ;;
esac
rm -rf "$out"
OFFLOAD_SANITIZE=$flags "$PY" setup.py -q build_ext -b "$out/lib" -t "$out/tmp" 2>&1 | grep -v -i deprecat || true
mkdir -p "$out/pkg"
cp -r src/offload "$out/pkg/"
rm -f "$out"/pkg/offload/_engine*.so
cp "$out"/lib/offload/_engine*.so "$out/pkg/offload/"
export PYTHONPATH="$PWD/$out/pkg${PYTHONPATH:+:$PYTHONPATH}"
# setarch -R: TSan needs a fixed address layout on kernels with high mmap entropy.
if [[ ${1:-} == --python ]]; then shift; LD_PRELOAD="$runtime" exec setarch "$(uname -m)" -R "$PY" "$@"; fi
LD_PRELOAD="$runtime" exec setarch "$(uname -m)" -R "$PY" -m pytest -q -p no:cacheprovider "$@"
