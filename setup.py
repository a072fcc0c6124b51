"""Build the C engine (offload._engine); all metadata lives in pyproject.toml."""

import os
import sys
from glob import glob

from setuptools import Extension, setup

extra_compile = ["-std=c11", "-Wall", "-Wextra", "-Werror", "-Wno-missing-field-initializers"]
extra_link: list[str] = []
if os.environ.get("OFFLOAD_SANITIZE"):
    # e.g. OFFLOAD_SANITIZE=address,undefined or OFFLOAD_SANITIZE=thread
    flags = [f"-fsanitize={os.environ['OFFLOAD_SANITIZE']}", "-fno-omit-frame-pointer", "-g", "-O1"]
    extra_compile += flags
    extra_link += flags
elif os.environ.get("OFFLOAD_DEBUG"):
    extra_compile += ["-O0", "-g"]
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
