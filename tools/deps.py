"""Print the requirements of the given pyproject extras, one per line (for `pip install -r`)."""

import sys

try:
    import tomllib
except ModuleNotFoundError:  # CPython 3.10: the same parser, from PyPI
    import tomli as tomllib

with open("pyproject.toml", "rb") as f:
    project = tomllib.load(f)["project"]
reqs = list(project.get("dependencies", []))
for extra in sys.argv[1:]:
    reqs += project["optional-dependencies"][extra]
print("\n".join(dict.fromkeys(reqs)))
