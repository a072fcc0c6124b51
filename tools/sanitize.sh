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
# one, subprocesses included (they inherit LD_PRELOAD and the options). Before the run, a
# canary (tools/sanitizer_canary.c: a seeded race, heap overflow, signed overflow) must be
# reported in that same setup, or the script stops. It prints
# "<kind>: N sanitizer report(s)" and fails if N > 0 or pytest fails.
#
# Environment: SANITIZE_TIMEOUT (seconds, default 900) bounds the whole run (each run
# takes 1-2 minutes; pytest-timeout stops a single stuck test first).
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
  "$py" -m pip install -q -U "pip>=23" "setuptools>=77,<80" wheel "tomli>=2,<3; python_version < '3.11'"
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
# The previous install goes first: if this build fails, no stale engine (instrumented,
# but built from older sources) may be left behind to be tested instead.
"$py" -m pip uninstall -q -y offload >/dev/null 2>&1 || true
if ! OFFLOAD_SANITIZE=$flags "$py" -m pip install -q --no-deps --no-build-isolation \
  --force-reinstall "$out/src" >"$out/build.log" 2>&1; then
  cat "$out/build.log" >&2
  echo "$kind: building the instrumented engine failed (log: $out/build.log)" >&2
  exit 1
fi
so=$(ls "$venv"/lib/python3*/site-packages/offload/_engine*.so)
marker=__asan_init
[[ $kind == tsan ]] && marker=__tsan_init
# grep reads all of nm's output: with -q it would exit at the first match and nm, cut
# off by SIGPIPE, would fail the pipeline under pipefail (a bigger .so made it likely).
if ! nm -D --undefined-only "$so" | grep "$marker" >/dev/null; then
  echo "$kind: $so is not instrumented ($marker missing); refusing to run" >&2
  exit 1
fi

# --- runtime options ------------------------------------------------------------
case $kind in
  asan)
    runtime="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
    # detect_leaks=0: leaks are `make test-leaks`' job (CPython itself "leaks" at exit).
    # use_sigaltstack=0: at interpreter exit CPython ends every thread still running
    # Python code with pthread_exit() (take_gil -> PyThread_exit_thread). That unwinds
    # the engine's instrumented frames without their epilogues, and uninstrumented
    # CPython never calls __asan_handle_no_return, so the stack's redzones stay poisoned;
    # then ASan's own thread teardown (AsanThread::Destroy -> UnsetAlternateSignalStack)
    # writes a stack_t there and reports a "stack-buffer-overflow ... thread T-1" whose
    # stack is all libasan and glibc. Not a bug: the child of the interpreter-exit test
    # (a pool thread stuck in user code) hit it. Without a per-thread alternate signal
    # stack that write never happens; the cost is that a stack overflow in C shows as a
    # plain SIGSEGV (still a failure) instead of ASan's stack-overflow report.
    export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=0:exitcode=99:\
use_sigaltstack=0:malloc_context_size=30:quarantine_size_mb=64:log_path=$reports/asan"
    export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:exitcode=99:\
report_error_type=1:log_path=$reports/ubsan"
    # With ASan in the process, GCC's libubsan runs as ASan's plugin and never applies
    # its log_path (its own copy of sanitizer_common keeps writing to stderr), so a UBSan
    # report would be missed by the count below (the canary showed it). Every Python
    # process of this venv (subprocesses included) sets libubsan's report path itself at
    # start-up, through a .pth hook that does nothing unless these two are set.
    export OFFLOAD_UBSAN_LIB
    OFFLOAD_UBSAN_LIB=$(gcc -print-file-name=libubsan.so)
    export OFFLOAD_UBSAN_LOG_PATH=$reports/ubsan
    site=$(ls -d "$venv"/lib/python3*/site-packages)
    echo 'import os, ctypes; p = os.environ.get("OFFLOAD_UBSAN_LOG_PATH"); lib = os.environ.get("OFFLOAD_UBSAN_LIB"); p and lib and ctypes.CDLL(lib).__sanitizer_set_report_path(p.encode())' \
      >"$site/offload_ubsan_log_path.pth"
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

# count_reports: the reports logged so far. A report starts with one of these lines
# (ASan's and LSan's are prefixed with "==PID=="); a file with none of them still
# counts once (something was logged, e.g. a report cut short by its process's exit).
count_reports() {
  local f n total=0
  for f in "$reports"/*; do
    [[ -e $f ]] || continue
    n=$(grep -c -E "^(==[0-9]+==)?(WARNING|ERROR|FATAL): (ThreadSanitizer|AddressSanitizer|LeakSanitizer)|runtime error:" "$f" || true)
    ((n)) || n=1
    total=$((total + n))
  done
  echo "$total"
}

# --- canary: prove that a seeded bug is reported in this very setup ---------------
# tools/sanitizer_canary.c, built with the same flags and run with the same runtime and
# options. If its bugs go unreported (runtime not preloaded, options wrong, log_path
# unwritable, a suppression too broad), "0 reports" below would mean nothing: stop.
canary=$PWD/$out/canary.so
gcc -shared -fPIC -g -O1 -fsanitize="$flags" tools/sanitizer_canary.c -o "$canary"
case $kind in
  asan) canary_calls=(canary_overflow canary_ubsan) ;;
  tsan) canary_calls=(canary_race) ;;
esac
for call in "${canary_calls[@]}"; do
  "${wrap[@]}" "$py" tools/sanitizer_canary.py "$canary" "$call" >/dev/null 2>&1 || true
  if (($(count_reports) < 1)); then
    echo "$kind: the canary's $call went unreported: this setup can't see bugs; stopping" >&2
    exit 1
  fi
  rm -f "$reports"/*
done
echo "$kind: canary bugs reported (${canary_calls[*]}): the sanitizer sees bugs in this setup"

# --- run --------------------------------------------------------------------------
if [[ ${1:-} == --python ]]; then
  shift
  cmd=("$py" "$@")
else
  cmd=("$py" -m pytest -q -p no:cacheprovider "$@")
fi
echo "$kind: ${cmd[*]}"
status=0
started=$SECONDS
timeout --signal=INT --kill-after=60 "${SANITIZE_TIMEOUT:-900}" "${wrap[@]}" "${cmd[@]}" || status=$?
unset LD_PRELOAD

shopt -s nullglob
files=("$reports"/*)
for f in "${files[@]}"; do
  echo "----- $f"
  cat "$f"
done
count=$(count_reports)
echo "$kind: $count sanitizer report(s) in ${#files[@]} process(es);" \
  "exit status $status; $((SECONDS - started)) s"
if ((count)); then
  exit 1
fi
exit "$status"
