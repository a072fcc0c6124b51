"""The bad-input tables of docs/reliability.md, generated from the test catalogue.

Runs every case of tests/test_bad_input.py (CASES) once, records the exception it really
raises, and prints one short Markdown table per call: the bad inputs and the error each
gets (inputs that get the same error are merged into one row). Cases that fail because of
a known engine bug (xfail) are listed with the bug.

Usage: python tools/bad_input_table.py            print the tables
       python tools/bad_input_table.py --update   rewrite them in docs/reliability.md
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import re
import sys
import warnings
from collections import defaultdict
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "reliability.md"
START, END = "<!-- bad-input tables: start -->", "<!-- bad-input tables: end -->"

ENTRY_POINTS = (
    "spawn",
    "run",
    "loop.spawn",
    "background.spawn",
    "threads.spawn",
    "threads.run",
    "options.spawn",
)

#: (title, what the id starts with): the first that matches takes the case.
GROUPS: list[tuple[str, tuple[str, ...]]] = [
    ("`Runtime(**options)` and `runtime.configure(**options)`", ("Runtime-", "configure-")),
    ("`offload.configure(**options)`", ("offload.configure",)),
    ("after shutdown", ("after-shutdown:",)),
    ("in the wrong state or from the wrong thread", ("after-first-use:", "before-", "wrong-")),
    ("`start()`", ("start(",)),
    ("a full lane", ("full:",)),
    ("the processes lane", ("processes.",)),
    ("`offload.call()`", ("call(",)),
    ("`loop_local` / `thread_local`", ("loop_local", "thread_local")),
    ("`options()`", ("options(", "auto-lane")),
    ("`@offload.task`", ("task(",)),
    (
        "periodic work: `offload.every`, `offload.cron`, `@offload.periodic`",
        ("every(", "cron(", "periodic("),
    ),
    ("timeouts", ("drain", "shutdown(", "close(", "offload.drain", "Task.result(", "Task.exc")),
    ("`Task` and `Lane` objects", ("Task", "Lane")),
    (
        "the target: spawn and run, on every entry point",
        (*(f"{e}(" for e in ENTRY_POINTS), "loop.run(", "background.run("),
    ),
]


def load_catalogue() -> ModuleType:
    path = ROOT / "tests" / "test_bad_input.py"
    spec = importlib.util.spec_from_file_location("test_bad_input", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def group_of(case_id: str) -> str:
    for title, prefixes in GROUPS:
        if case_id.startswith(prefixes):
            return title
    return "other"


def clean(message: str) -> str:
    message = re.sub(r" at 0x[0-9a-f]+", "", message)  # reprs of functions and coroutines
    message = re.sub(r"id=\d+", "id=…", message)
    return " ".join(message.split()).replace("|", "\\|")


def outcome(cat: ModuleType, case: Any) -> str:
    env = cat.Env()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            case.call(env)
    except BaseException as exc:  # noqa: BLE001 - recording what each bad input raises
        name = type(exc).__name__
        if type(exc).__module__.startswith("offload"):
            name = f"offload.{name}"
        if case.bug:
            return f"known bug, xfail: {clean(case.bug)}"
        return f"`{name}`: {clean(str(exc))}"
    finally:
        env.close()
    return "**no error raised**"


def input_label(cat: ModuleType, case_id: str) -> str:
    for opt_id, options, _, _ in cat.OPTION_CASES:
        if case_id in (f"Runtime-{opt_id}", f"configure-{opt_id}"):
            return ", ".join(f"{k}={v!r}" for k, v in options.items())
    return case_id


def tables(cat: ModuleType) -> tuple[str, int]:
    rows: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for case in cat.CASES:
        label = input_label(cat, case.id)
        merged = rows[group_of(case.id)][outcome(cat, case)]
        if label not in merged:
            merged.append(label)
    order = [title for title, _ in GROUPS] + ["other"]
    out = []
    for title in sorted(rows, key=order.index):
        out += [f"**{title}**", "", "| bad input | error |", "| --- | --- |"]
        for error, labels in rows[title].items():
            out.append(f"| {', '.join(f'`{label}`' for label in labels)} | {error} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n", cat.count_cases()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--update", action="store_true", help=f"rewrite them in {DOC}")
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)
    cat = load_catalogue()
    text, count = tables(cat)
    header = (
        f"{len(cat.CASES)} cases of the catalogue ({count} bad inputs with the two tests of"
        " their own: a `run()` never awaited, `configure()` after first use in a fresh"
        " process), generated by `tools/bad_input_table.py` from `tests/test_bad_input.py`:\n\n"
    )
    block = f"{START}\n{header}{text}{END}"
    if not args.update:
        print(block)
        return 0
    doc = DOC.read_text()
    if START not in doc or END not in doc:
        print(f"{DOC}: no {START} ... {END} block to replace", file=sys.stderr)
        return 1
    head, rest = doc.split(START, 1)
    DOC.write_text(head + block + rest.split(END, 1)[1])
    print(f"{DOC}: {len(cat.CASES)} cases, {count} bad inputs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
