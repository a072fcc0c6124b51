"""TEMPORARY minimal codec (replaced by branch durable-codec)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import msgspec

_refs: dict[Any, tuple[str, Callable[..., Any]]] = {}


def function_ref(fn: Callable[..., Any]) -> tuple[str, Callable[..., Any]]:
    hit = _refs.get(fn)
    if hit is not None:
        return hit
    mod, qual = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not mod or "<" in qual:
        raise TypeError(f"{fn!r} is not importable")
    ref = (f"{mod}:{qual}", getattr(fn, "__wrapped__", fn))
    _refs[fn] = ref
    return ref


def resolve_function(ref: str) -> Callable[..., Any]:
    mod, _, qual = ref.partition(":")
    try:
        obj: Any = importlib.import_module(mod)
        for part in qual.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise LookupError(f"cannot import {ref}: {exc}") from None
    return getattr(obj, "__wrapped__", obj)  # type: ignore[no-any-return]


class Codec:
    name: str = "msgpack"

    def encode_call(self, fn_name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        return msgspec.msgpack.encode([args, kwargs])

    def decode_call(
        self, fn: Callable[..., Any], payload: bytes
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        args, kwargs = msgspec.msgpack.decode(payload)
        return tuple(args), kwargs

    def encode_result(self, value: Any) -> bytes:
        return msgspec.msgpack.encode(value)

    def decode_result(self, fn: Callable[..., Any] | None, data: bytes) -> Any:
        return msgspec.msgpack.decode(data)


_codec = Codec()


def make_codec(serializer: str, signing_key: bytes | str | None) -> Codec:
    return _codec


def codec_for(name: str, signing_key: bytes | None) -> Codec:
    return _codec
