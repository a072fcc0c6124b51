# offload: every set-up step lives here (CI runs `make test` on a fresh machine).
PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip --disable-pip-version-check -q
STAMP   := $(VENV)/.deps-stamp

.PHONY: all venv build test test-asyncio-debug test-property test-matrix test-upstream dist demo serve showcase bench bench-quick bench-compare bench-redis-peers test-sanitize test-sanitize-asan test-sanitize-tsan test-debug test-leaks soak lint clean system-deps redis-deps fuzz-deadline

all: build

# --- environment -----------------------------------------------------------
# Our builds treat every C warning as an error (setup.py's OFFLOAD_WERROR switch); a
# user's plain `pip install` never does.
export OFFLOAD_WERROR ?= 1
# tools/deps.py reads pyproject.toml with tomllib (3.11+) or, on 3.10, tomli.
BOOTSTRAP := "pip>=23" "setuptools>=77,<80" wheel "tomli>=2,<3; python_version < '3.11'"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -U $(BOOTSTRAP)
	$(PY) tools/deps.py test bench dev > $(VENV)/requirements.txt
	$(PIP) install -r $(VENV)/requirements.txt
	touch $(STAMP)

venv: $(STAMP)

# Debian packages some tests need (headless Chromium for the dashboard test, Redis for
# the durable tier's Redis store).
system-deps:
	@bash tools/system-deps.sh chromium chromium-driver redis-server

# The Redis store's tests start their own redis-server (Debian's): every suite run needs it.
redis-deps:
	@command -v redis-server >/dev/null || bash tools/system-deps.sh redis-server

# --- build -----------------------------------------------------------------
# Reinstalled only when a source changed, so targets that run side by side (CI runs two
# at once) never rebuild in the same tree at the same time.
BUILD_STAMP := $(VENV)/.build-stamp
ENGINE_SOURCES := setup.py pyproject.toml $(wildcard csrc/*.c csrc/*.h src/offload/*.py \
  src/offload/*.pyi src/offload/py.typed src/offload/fastapi/*.py src/offload/durable/*.py src/offload/durable/*.lua src/offload/fastapi/static/*)
$(BUILD_STAMP): $(STAMP) $(ENGINE_SOURCES)
	$(PIP) install --no-deps --no-build-isolation --force-reinstall .
	touch $@

build: $(BUILD_STAMP)

# --- tests -----------------------------------------------------------------
# pytest processes per run (pytest-xdist's -n; 0: a single process). The suite mostly
# waits (servers and workers in subprocesses, threads winding down, the guard's grace
# period, timers), so even on 2 CPUs two processes per run, and two runs side by side in
# CI, cut the wall time; every test stays isolated (tmp_path, ports the kernel picks, the
# guard of tests/conftest.py per process).
TEST_WORKERS ?= 2
XDIST := -n $(TEST_WORKERS)

# The property-based search (tests/property) runs for OFFLOAD_PROPERTY_SECONDS of wall
# time: 20 s by default (in `make test`), PROPERTY_SECONDS in `make test-property` (CI).
test: build system-deps
	$(PY) -m pytest -q $(XDIST)

# The suite once more under asyncio's debug mode (slow callbacks, coroutines never
# awaited, calls from the wrong thread) with every warning raised as an error, but one:
# Starlette 1.x deprecates httpx for its TestClient in favour of a young fork (httpx2)
# that the tests don't need.
test-asyncio-debug: build redis-deps
	PYTHONASYNCIODEBUG=1 $(PY) -m pytest -q -p no:cacheprovider $(XDIST) -W error \
	  -W "ignore:Using \`httpx\` with \`starlette.testclient\` is deprecated:Warning" \
	  --ignore=tests/packaging --ignore-glob='*browser*'

# The suite (without the browser and sanitizer runs) on every supported CPython found
# here (pyenv, python3.X on PATH), each in its own venv under build/matrix/; one line per
# interpreter. A claimed version that is absent fails the target (tools/matrix.py).
# MATRIX_JOBS: interpreters at once; MATRIX_MODES: extra checks legs carry, e.g.
# 3.11=asyncio-debug,3.12=debug-build (CI's choice; see tools/matrix.py).
MATRIX_JOBS ?= 1
MATRIX_MODES ?=
# The CPythons to run (default: every supported one), e.g. MATRIX_VERSIONS="3.10 3.12".
MATRIX_VERSIONS ?=
# More pytest arguments for every leg: by default the `durable_heavy` tests are left
# out (thousands of tasks over several worker processes: they run once, in `make test`).
MATRIX_PYTEST_ARGS ?= -m "not durable_heavy"
test-matrix: redis-deps
	OFFLOAD_MATRIX_JOBS=$(MATRIX_JOBS) OFFLOAD_MATRIX_MODES=$(MATRIX_MODES) \
	  $(PYTHON) tools/matrix.py $(MATRIX_VERSIONS) -- --ignore=tests/packaging $(XDIST) \
	  $(MATRIX_PYTEST_ARGS)

# FastAPI's and Starlette's own background-task tests with the BackgroundTasks import
# swapped for offload's (tools/upstream.py: downloads the pinned sdists into build/upstream,
# prints pass/fail per test id; intended differences are listed, never dropped).
# UPSTREAM_REPEAT=200 runs each test 200 times.
UPSTREAM_REPEAT ?= 1
test-upstream: build
	$(PY) tools/upstream.py --repeat $(UPSTREAM_REPEAT)

# --- packages a user installs ---------------------------------------------------
# dist/: the sdist, and from it a manylinux wheel for every supported CPython found
# here (auditwheel repair; `auditwheel show` prints each wheel's policy).
dist: $(STAMP)
	$(PY) tools/dist.py

# The property-based search over the public API (tests/property) for PROPERTY_SECONDS
# (make test runs it for 20 s).
PROPERTY_SECONDS ?= 150
test-property: build
	OFFLOAD_PROPERTY_SECONDS=$(PROPERTY_SECONDS) $(PY) -m pytest -q -p no:cacheprovider tests/property

# --- reliability (issue 5; docs/reliability.md) --------------------------------
# Sanitizer builds get their own virtualenvs (build/venv-asan, build/venv-tsan) with the
# test dependencies; tools/sanitize.sh installs the instrumented engine into them.
build/venv-%/.deps-stamp: pyproject.toml
	$(PYTHON) -m venv build/venv-$*
	build/venv-$*/bin/python -m pip --disable-pip-version-check -q install -U $(BOOTSTRAP)
	build/venv-$*/bin/python tools/deps.py test > build/venv-$*/requirements.txt
	build/venv-$*/bin/python -m pip --disable-pip-version-check -q install -r build/venv-$*/requirements.txt
	touch $@

# ASan+UBSan over the whole suite (not the browser test: Chromium can't run with libasan
# preloaded; not tests/packaging, whose pip and gcc runs would inherit it); TSan over the
# concurrency tests: the model/fuzz test and fault injection
# (tests/reliability), the producer storm, cancel storm and spawn/cancel/close model
# (tests/test_reliability.py), and the engine's concurrency and shutdown-race tests
# (tests/engine/test_concurrency.py, test_shutdown.py) and the edge cases of issue 10
# (test_edges.py, test_option_fuzz.py) and issue 12's controls and periodic schedules on the timer
# thread (test_controls.py, test_periodic.py) ($(wildcard) so a checkout without them still
# runs). Each run first proves on a seeded bug that its sanitizer reports
# (tools/sanitizer_canary.c), is bounded (SANITIZE_TIMEOUT) and must end with 0 reports.
# Under TSan the model test runs 200 seeds (OFFLOAD_FUZZ_SEEDS; 12 in `make test`): a race
# shows up only in an interleaving where nothing happened to order the two accesses.
# Both also run the property-based search (tests/property) for SANITIZE_PROPERTY_SECONDS.
TSAN_TESTS = tests/reliability tests/test_reliability.py tests/property \
  $(wildcard tests/engine/test_concurrency.py tests/engine/test_shutdown.py \
  tests/engine/test_edges.py tests/engine/test_edges_python.py tests/engine/test_option_fuzz.py \
  tests/engine/test_controls.py tests/engine/test_periodic.py tests/durable/test_api.py)
TSAN_FUZZ_SEEDS ?= 0-199
# ASan leaves out the tests that run the FastAPI app in real servers (uvicorn, hypercorn,
# a shutdown under load) in subprocesses: the engine paths they drive are the ones the
# in-process FastAPI and engine tests drive, and under ASan they cost minutes of CI.
ASAN_SKIP_SERVERS = --ignore=tests/fastapi/test_fastapi_uvicorn.py \
  --ignore=tests/fastapi/test_fastapi_dropin_servers.py \
  --ignore=tests/fastapi/test_shutdown_under_load.py \
  --ignore=tests/durable/test_uvicorn_workers.py
# ... and the durable tests of pure Python (the codec, the command line's subprocesses,
# bad input of the durable tier, the stores' contract and model, the Redis store's own):
# no engine path the others don't take.
ASAN_SKIP_PYTHON = --ignore=tests/durable/test_codec.py --ignore=tests/durable/test_cli.py \
  --ignore=tests/durable/test_bad_input_durable.py --ignore=tests/durable/test_store.py \
  --ignore=tests/durable/test_store_model.py --ignore=tests/durable/test_redis.py
SANITIZE_PROPERTY_SECONDS ?= 30
test-sanitize: test-sanitize-asan test-sanitize-tsan

# The two halves, which CI runs side by side (ASan two pytest processes, TSan one).
test-sanitize-asan: build/venv-asan/.deps-stamp fuzz-deadline redis-deps
	OFFLOAD_PROPERTY_SECONDS=$(SANITIZE_PROPERTY_SECONDS) \
	  bash tools/sanitize.sh asan tests --ignore-glob='*browser*' --ignore=tests/packaging \
	  $(ASAN_SKIP_SERVERS) $(ASAN_SKIP_PYTHON) -m "not no_asan and not durable_heavy" \
	  $(XDIST) --durations=15

# TSan stays one pytest process (the shorter half of the pair: nothing to gain).
test-sanitize-tsan: build/venv-tsan/.deps-stamp redis-deps
	OFFLOAD_FUZZ_SEEDS=$(TSAN_FUZZ_SEEDS) OFFLOAD_PROPERTY_SECONDS=$(SANITIZE_PROPERTY_SECONDS) \
	  bash tools/sanitize.sh tsan $(TSAN_TESTS) -m "not no_tsan" --durations=15

# The suite on a debug build of the engine (OFFLOAD_DEBUG=1: -O0 -g, assert() on), in
# its own virtualenv (build/venv-debug): the invariants written as asserts in csrc/ (GIL
# held, lane mutex held, the stats identity, ring bounds) are checked on every path the
# tests take. Not the browser test nor tests/packaging (which build their own engines).
# Built from a fresh copy of the sources (build/debug/src), as the sanitizer builds are:
# the in-tree build/ cache could hand it an object file compiled without the asserts,
# which the nm check (a call to __assert_fail) refuses.
test-debug: build/venv-debug/.deps-stamp redis-deps
	rm -rf build/debug && mkdir -p build/debug/src
	cp -r setup.py pyproject.toml README.md csrc src build/debug/src/
	build/venv-debug/bin/python -m pip --disable-pip-version-check -q uninstall -y offload
	OFFLOAD_DEBUG=1 build/venv-debug/bin/python -m pip --disable-pip-version-check -q \
	  install --no-deps --no-build-isolation --force-reinstall build/debug/src
	nm -D --undefined-only build/venv-debug/lib/python3*/site-packages/offload/_engine*.so \
	  | grep -q __assert_fail || { echo "test-debug: the engine has no assert()"; exit 1; }
	build/venv-debug/bin/python -m pytest -q $(XDIST) --ignore-glob='*browser*' --ignore=tests/packaging

# The deadline arithmetic and seconds options (csrc/deadline.h, the code the engine
# compiles) fuzzed in plain C under ASan+UBSan (float-cast-overflow included, which
# -fsanitize=undefined leaves out on GCC): every boundary, then FUZZ_ITERATIONS random
# draws. It first proves it can see a bug: on the old arithmetic (--canary) it must fail.
# `make test` runs a smaller one (tests/test_fuzz_deadline.py).
FUZZ_ITERATIONS ?= 20000000
FUZZ_FLAGS = -std=c11 -Wall -Wextra -Werror -O1 -g -fno-omit-frame-pointer \
  -fsanitize=address,undefined,float-cast-overflow -fno-sanitize-recover=all
fuzz-deadline:
	@mkdir -p build
	$(CC) $(FUZZ_FLAGS) -Icsrc tests/c/fuzz_deadline.c -lm -o build/fuzz_deadline
	@build/fuzz_deadline --canary >/dev/null 2>&1; test $$? -eq 1 || \
	  { echo "fuzz-deadline: the canary (old arithmetic) was not caught"; exit 1; }
	build/fuzz_deadline $(FUZZ_ITERATIONS)

# Refleak hunt (tools/leaks.py: eight scenarios, live objects and allocated blocks must
# stay exactly at their baseline round after round) and valgrind memcheck (tools/
# valgrind.sh: a scenario over every lane, then the model/fuzz and storm tests). Both
# first prove on a seeded leak/bug that they would catch one.
test-leaks: build
	$(PY) tools/leaks.py
	@command -v valgrind >/dev/null || bash tools/system-deps.sh valgrind
	bash tools/valgrind.sh

# 1,000,000 tasks across all lanes from 8 producer threads (the suite runs a small one).
soak: build
	$(PY) tools/soak.py --tasks 1000000

lint: build
	$(PY) -m ruff check src tests bench examples tools/upstream.py
	$(PY) -m ruff format --check src tests bench examples tools/upstream.py
	$(PY) -m mypy
	$(PY) tools/check_typing.py
	$(PY) tools/check_c.py

# --- main job ----------------------------------------------------------------
demo: build
	@bash tools/system-deps.sh redis-server
	$(PY) examples/demo.py
	$(PY) examples/redis_demo.py

# The example service in the foreground, for a person to open the dashboard.
PORT ?= 8000
serve: build
	@echo "Dashboard: http://127.0.0.1:$(PORT)/offload/?token=$${OFFLOAD_DASHBOARD_TOKEN:-demo-token}"
	PYTHONPATH=examples $(PY) -m service --host 127.0.0.1 --port $(PORT)

# The engine's own showcase: every lane exercised, what happened printed.
showcase: build
	$(PY) examples/showcase.py

# --- benchmarks (issue 4; docs/benchmarks.md) ------------------------------------
# Every comparison in one run, interleaved; writes bench/results.json + results.png
# (~15 min). bench-quick: a ~1 min subset, written to bench/out/. wrk drives the
# end-to-end benchmark (Debian package `wrk`). Their `compare` group builds the engine
# of BEFORE (default: a4ebdaa, the last commit before task controls) into
# build/compare/ and runs the spawn benchmarks on it and on this tree, interleaved.
BEFORE ?= a4ebdaa
bench: build
	@command -v wrk >/dev/null || bash tools/system-deps.sh wrk
	@command -v redis-server >/dev/null || bash tools/system-deps.sh redis-server
	@$(MAKE) --no-print-directory bench-redis-peers || echo "bench: the Redis peers did not install; the redis group reports them as failed"
	$(PY) bench/run.py --before $(BEFORE)

bench-quick: build
	@command -v wrk >/dev/null || bash tools/system-deps.sh wrk
	@command -v redis-server >/dev/null || bash tools/system-deps.sh redis-server
	@$(MAKE) --no-print-directory bench-redis-peers || echo "bench: the Redis peers did not install; the redis group reports them as failed"
	$(PY) bench/run.py --quick --before $(BEFORE)

# The Redis group's peers (bench/redis_bench.py: streaQ, SAQ, taskiq-redis, arq, Celery)
# in virtualenvs of their own, not in offload's dependencies: build/venv-redis-peers/main
# and, apart because it pins an older redis-py, build/venv-redis-peers/arq; versions by
# range in bench/requirements-redis-*.txt.
REDIS_PEERS := build/venv-redis-peers
$(REDIS_PEERS)/%/.stamp: bench/requirements-redis-%.txt
	rm -rf $(REDIS_PEERS)/$*
	$(PYTHON) -m venv $(REDIS_PEERS)/$*
	$(REDIS_PEERS)/$*/bin/python -m pip --disable-pip-version-check -q install -U "pip>=23"
	$(REDIS_PEERS)/$*/bin/python -m pip --disable-pip-version-check -q install -r $<
	touch $@

bench-redis-peers: $(REDIS_PEERS)/main/.stamp $(REDIS_PEERS)/arq/.stamp

# Only the before/after table: `make bench-compare BEFORE=<commit>` (~3 min).
bench-compare: build
	$(PY) bench/before_after.py --before $(BEFORE)

clean:
	rm -rf build dist *.egg-info src/*.egg-info $(VENV)
