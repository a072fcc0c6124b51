#!/usr/bin/env bash
# Run tests (or a script) against the C engine built with sanitizers.
#
#   tools/sanitize.sh asan [pytest args...]     AddressSanitizer + UndefinedBehaviorSanitizer
#   tools/sanitize.sh tsan [pytest args...]     ThreadSanitizer
#   tools/sanitize.sh asan|tsan --python FILE [args...]   a script instead of pytest
#
# The instrumented package is pip-installed into its own virtualenv, build/venv-<kind>
# (created with the test dependencies by `make test-sanitize`, or here if missing), from
# a fresh copy of the sources under build/sanitize-<kind>/: the normal .venv install and
# the in-tree build/ cache are never touched, and a stale uninstrumented object file can't
# be reused by accident (the script checks the .so really is instrumented).
#
# Reports go to build/sanitize-<kind>/reports/ (log_path), one file per process that had
# one, subprocesses included (they inherit LD_PRELOAD and the options). The script prints
# "<kind>: N sanitizer report(s)" and fails if N > 0 or pytest fails.
#
# Environment: SANITIZE_TIMEOUT (seconds, default 1800) bounds the whole run.
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:-}
shift || true
case $kind in
  asan|tsan) ;;
  *) echo "usage: $0 asan|tsan [pytest args...] | --python FILE [args...]" >&2; exit 2 ;;
esac
venv=build/venv-$kind
py=$venv/bin/python
out=build/sanitize-$kind
reports=$PWD/$out/reports

# --- the virtualenv (make creates it; this is the fallback for direct use) ---
if [[ ! -f $venv/.deps-stamp ]]; then
  ${PYTHON:-python3} -m venv "$venv"
  "$py" -m pip install -q -U "pip>=23" "setuptools>=77,<80" wheel
  "$py" tools/deps.py test > "$venv/requirements.txt"
  "$py" -m pip install -q -r "$venv/requirements.txt"
  touch "$venv/.deps-stamp"
fi

# --- build and install the instrumented engine ---------------------------------
case $kind in
  asan) flags=address,undefined ;;
  tsan) flags=thread ;;
esac
rm -rf "$out"
mkdir -p "$out/src" "$reports"
cp -r setup.py pyproject.toml README.md csrc src "$out/src/"
echo "$kind: building the engine with -fsanitize=$flags"
OFFLOAD_SANITIZE=$flags "$py" -m pip install -q --no-deps --no-build-isolation \
  --force-reinstall "$out/src" 2>&1 | grep -v -i -E "deprecat|^\s*$|!!|\*\*\*\*" || true
so=$(ls "$venv"/lib/python3*/site-packages/offload/_engine*.so)
marker=__asan_init
[[ $kind == tsan ]] && marker=__tsan_init
if ! nm -D --undefined-only "$so" | grep -q "$marker"; then
  echo "$kind: $so is not instrumented ($marker missing); refusing to run" >&2
  exit 1
fi

# --- runtime options ------------------------------------------------------------
case $kind in
  asan)
    runtime="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
    # detect_leaks=0: leaks are `make test-leaks`' job (CPython itself "leaks" at exit).
    export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=0:exitcode=99:\
malloc_context_size=30:quarantine_size_mb=64:log_path=$reports/asan"
    export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:exitcode=99:\
report_error_type=1:log_path=$reports/ubsan"
    # Every Python allocation goes through malloc, so ASan sees overruns of Python
    # objects the engine writes past, and use-after-free of objects it released.
    export PYTHONMALLOC=malloc
    ;;
  tsan)
    runtime="$(gcc -print-file-name=libtsan.so)"
    # halt_on_error=0: collect every report of the run (exit status 66 if any).
    # die_after_fork=0: the fork test starts threads in a child of a threaded parent,
    # which offload supports; TSan would otherwise kill that child.
    export TSAN_OPTIONS="halt_on_error=0:exitcode=66:second_deadlock_stack=1:\
die_after_fork=0:history_size=4:suppressions=$PWD/tools/tsan.supp:log_path=$reports/tsan"
    ;;
esac
export LD_PRELOAD="$runtime${LD_PRELOAD:+ $LD_PRELOAD}"
export OFFLOAD_SANITIZER=$kind # tests may scale down or skip what can't work instrumented

# Some kernels (high vm.mmap_rnd_bits) give TSan/ASan an address layout they can't use
# ("unexpected memory mapping"); setarch -R (no ASLR) fixes that. Use it only if needed.
wrap=()
if ! "$py" -c pass >/dev/null 2>&1; then
  if setarch "$(uname -m)" -R "$py" -c pass >/dev/null 2>&1; then
    wrap=(setarch "$(uname -m)" -R)
    echo "$kind: using setarch -R (this kernel's ASLR breaks the sanitizer runtime)"
  else
    echo "$kind: the instrumented interpreter doesn't start:" >&2
    "$py" -c pass || true
    exit 1
  fi
fi
rm -f "$reports"/* # the probe above must not count

# --- run --------------------------------------------------------------------------
if [[ ${1:-} == --python ]]; then
  shift
  cmd=("$py" "$@")
else
  cmd=("$py" -m pytest -q -p no:cacheprovider "$@")
fi
echo "$kind: ${cmd[*]}"
status=0
timeout --signal=INT --kill-after=60 "${SANITIZE_TIMEOUT:-1800}" "${wrap[@]}" "${cmd[@]}" || status=$?
unset LD_PRELOAD

shopt -s nullglob
files=("$reports"/*)
for f in "${files[@]}"; do
  echo "----- $f"
  cat "$f"
done
count=0
if ((${#files[@]})); then
  count=$(cat "${files[@]}" | grep -c -E "^(WARNING: ThreadSanitizer|ERROR: AddressSanitizer|ERROR: LeakSanitizer)|runtime error:" || true)
  ((count)) || count=${#files[@]} # something was logged: count it even if unrecognised
fi
echo "$kind: $count sanitizer report(s) in ${#files[@]} process(es); exit status $status"
if ((count)); then
  exit 1
fi
exit "$status"
