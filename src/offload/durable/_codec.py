"""Placeholder: the codec (function references, MessagePack via msgspec, signed pickle)
is being written on branch durable-codec. Interface only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def function_ref(fn: Callable[..., Any]) -> tuple[str, Callable[..., Any]]:
    raise NotImplementedError


def resolve_function(ref: str) -> Callable[..., Any]:
    raise NotImplementedError


class Codec:
    name: str = ""

    def encode_call(self, fn_name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        raise NotImplementedError

    def decode_call(
        self, fn: Callable[..., Any], payload: bytes
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        raise NotImplementedError

    def encode_result(self, value: Any) -> bytes:
        raise NotImplementedError

    def decode_result(self, fn: Callable[..., Any] | None, data: bytes) -> Any:
        raise NotImplementedError


def make_codec(serializer: str, signing_key: bytes | str | None) -> Codec:
    raise NotImplementedError


def codec_for(name: str, signing_key: bytes | None) -> Codec:
    raise NotImplementedError
