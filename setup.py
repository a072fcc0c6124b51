"""Build the C engine (offload._engine); all metadata lives in pyproject.toml.

A user's `pip install` compiles with warnings shown but never fatal: a newer compiler
or CPython that deprecates something must not stop an install. Our own builds (make
build/test, sanitizers, CI) set OFFLOAD_WERROR=1 and keep every warning an error.

Environment switches (all optional):
  OFFLOAD_WERROR=1        -Werror (the dev build)
  OFFLOAD_DEBUG=1         -O0 -g with assert() on (-UNDEBUG)
  OFFLOAD_SANITIZE=kinds  e.g. address,undefined or thread (implies -g -O1, asserts on)
"""

import os
import sys
from glob import glob

from setuptools import Extension, setup


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


extra_compile = ["-std=c11", "-Wall", "-Wextra", "-Wno-missing-field-initializers"]
extra_link: list[str] = []
if _flag("OFFLOAD_WERROR"):
    extra_compile.append("-Werror")
if os.environ.get("OFFLOAD_SANITIZE"):
    # e.g. OFFLOAD_SANITIZE=address,undefined or OFFLOAD_SANITIZE=thread
    flags = [f"-fsanitize={os.environ['OFFLOAD_SANITIZE']}", "-fno-omit-frame-pointer", "-g", "-O1"]
    extra_compile += [*flags, "-UNDEBUG"]
    extra_link += flags
elif _flag("OFFLOAD_DEBUG"):
    extra_compile += ["-O0", "-g", "-UNDEBUG"]
else:
    extra_compile += ["-O2"]

libraries = ["pthread"] if sys.platform != "win32" else []

setup(
    ext_modules=[
        Extension(
            "offload._engine",
            sources=sorted(glob("csrc/*.c")),
            depends=sorted(glob("csrc/*.h")),
            include_dirs=["csrc"],
            extra_compile_args=extra_compile,
            extra_link_args=extra_link,
            libraries=libraries,
        )
    ]
)
