"""An example service: a small shop API that does its side work with offload.

Run it with `make serve` (or `PYTHONPATH=examples python -m service --port 8000`).
"""
