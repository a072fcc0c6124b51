"""Which functions were declared durable (`@offload.task(durable=True)`): a runtime
that starts with one declared opens its store and works the queue."""

from __future__ import annotations

_declared: list[str] = []


def declare(ref: str) -> None:
    _declared.append(ref)


def declared() -> bool:
    return bool(_declared)
