"""The durable tier's codec: how a task's function and arguments are stored.

It owns three things:

* function references: `function_ref` turns a function into the "module:qualname" a
  stored row keeps, refusing what another process could not import back (lambdas,
  closures, bound methods of instances, partials, callable instances, shadowed names);
  `resolve_function` imports one back on the worker side;
* the MessagePack codec (msgspec), the default: arguments and results are plain data
  on disk; the function's annotations restore their types when a worker decodes them;
* the signed pickle codec (`serializer="pickle"`): any picklable value, with an
  HMAC-SHA256 over the bytes checked before anything is unpickled.

Both caches (references, and per-function hints) are plain dicts filled under the GIL:
a race only computes the same entry twice, so they need no lock.
"""

from __future__ import annotations

import collections.abc
import functools
import hashlib
import hmac
import importlib
import inspect
import pickle
import sys
import types
import typing
from collections.abc import Callable
from typing import Any

import msgspec

#: `function_ref` results by function object. Module-level functions live as long as
#: their module, so keeping them alive here costs nothing.
_refs: dict[Any, tuple[str, Callable[..., Any]]] = {}
#: `resolve_function` results (the callable to run) by "module:qualname".
_resolved: dict[str, Callable[..., Any]] = {}

_SERIALIZER_HINT = (
    "pass plain data, a dataclass, a msgspec.Struct or a pydantic model, "
    "or configure serializer='pickle'"
)


def _safe_str(obj: object) -> str:
    """`str(obj)` that survives a user's `__str__` raising."""
    try:
        return str(obj)
    except Exception:  # noqa: BLE001 (a user's __str__ may raise anything)
        return f"<{_type_name(obj)} whose __str__ raised>"


def _type_name(obj: object) -> str:
    cls = type(obj)
    return f"{getattr(cls, '__module__', '?')}.{getattr(cls, '__qualname__', '?')}"


def _str_attr(obj: object, name: str) -> str | None:
    """`obj.name` if it is a str; None if missing, not a str, or its lookup raised."""
    try:
        value = getattr(obj, name, None)
    except Exception:  # noqa: BLE001 (a user's __getattr__ may raise anything)
        return None
    return value if isinstance(value, str) else None


def _describe(fn: object) -> str:
    """A name for `fn` in an error message, without calling its `__repr__`."""
    name = _str_attr(fn, "__qualname__")
    module = _str_attr(fn, "__module__")
    if isinstance(name, str):
        return f"{module}.{name}" if module is not None else name
    return f"an instance of {_type_name(fn)}"


# ---------------------------------------------------------------- function references


def function_ref(fn: Callable[..., Any]) -> tuple[str, Callable[..., Any]]:
    """Return `("module:qualname", callable_to_run)` for a task function.

    Accepted: module-level functions (sync or async), `@offload.task` functions (the
    reference names the module attribute, the wrapper; the callable to run is the
    function it wraps; passing the wrapped function itself is accepted too),
    classmethods and staticmethods reached through an importable class, classes, and
    builtins that import back. Functions defined in `__main__` are accepted, but a
    worker in another process must be able to import them: its `__main__` must define
    them too.

    Refused with `TypeError`: lambdas, closures and other `<locals>` functions, bound
    methods of instances, `functools.partial`, callable instances, non-callables and
    anything whose "module:qualname" does not import back to the same object.
    """
    try:
        return _refs[fn]
    except KeyError:
        cacheable = True
    except Exception:  # noqa: BLE001 (a user's __hash__/__eq__ may raise anything)
        # Unhashable, or a user's `__hash__`/`__eq__` raised: checked, not cached.
        cacheable = False
    ref, target = _compute_ref(fn)
    if cacheable:
        _refs[fn] = (ref, target)
    _resolved.setdefault(ref, target)
    return ref, target


def _refuse(fn: object, why: str, instead: str = "") -> typing.NoReturn:
    do = instead or "define the function at module level and pass it by name"
    raise TypeError(
        f"cannot run {_describe(fn)} as a durable task: {why}; {do}. "
        "A durable task is stored as the function's import path, which a worker "
        "(maybe in another process) imports back"
    )


def _compute_ref(fn: Any) -> tuple[str, Callable[..., Any]]:
    from .._decorator import TaskFunction

    if not callable(fn):
        raise TypeError(
            f"a durable task needs a callable, not {_type_name(fn)}: pass a module-level function"
        )
    if isinstance(fn, functools.partial):
        _refuse(
            fn,
            "it is a functools.partial",
            "pass the function itself and its arguments to spawn",
        )
    if isinstance(fn, types.MethodType | types.BuiltinMethodType):
        owner = fn.__self__
        if not isinstance(owner, type | types.ModuleType) and owner is not None:
            _refuse(
                fn,
                "it is a method bound to an instance, which cannot be stored",
                "use a module-level function (or a classmethod/staticmethod) and pass "
                "the data it needs as arguments",
            )
    module = _str_attr(fn, "__module__")
    qualname = _str_attr(fn, "__qualname__")
    if qualname is None or module is None:
        if not isinstance(fn, types.FunctionType | types.BuiltinFunctionType | type):
            _refuse(
                fn,
                "it is a callable instance, which has no import path",
                "use a module-level function and pass the data it needs as arguments",
            )
        _refuse(fn, "it has no __module__/__qualname__ to import it by")
    if "<lambda>" in qualname:
        _refuse(fn, "it is a lambda, which has no import path")
    if "<locals>" in qualname:
        _refuse(fn, "it is defined inside another function (a closure or local)")
    ref = f"{module}:{qualname}"
    try:
        resolved = _walk(module, qualname)
    except LookupError as exc:
        _refuse(fn, f"{ref} does not import back ({_safe_str(exc)})")
    if resolved is fn or (isinstance(fn, types.MethodType) and _same_method(resolved, fn)):
        target = fn.__wrapped__ if isinstance(fn, TaskFunction) else fn
        return ref, target
    if isinstance(resolved, TaskFunction) and resolved.__wrapped__ is fn:
        return ref, fn
    _refuse(
        fn,
        f"{ref} imports back to a different object (the name is shadowed, or the "
        "function was defined under another name or wrapped by a decorator)",
        "pass the object the module attribute holds",
    )


def _same_method(a: object, b: types.MethodType) -> bool:
    return isinstance(a, types.MethodType) and a.__self__ is b.__self__ and a.__func__ is b.__func__


def _walk(module_name: str, qualname: str) -> Any:
    """Import `module_name` and follow `qualname`; `LookupError` if either fails."""
    module = sys.modules.get(module_name)
    if module is None:
        try:
            module = importlib.import_module(module_name)
        except BaseException as exc:
            if not isinstance(exc, Exception):
                raise
            raise LookupError(
                f"module {module_name!r} does not import: {type(exc).__name__}: {_safe_str(exc)}"
            ) from None
    obj: Any = module
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except Exception:  # noqa: BLE001 (a module's __getattr__ may raise anything)
            raise LookupError(f"module {module_name!r} has no attribute {qualname!r}") from None
    return obj


def resolve_function(ref: str) -> Callable[..., Any]:
    """Import a "module:qualname" back; return the callable to run.

    `LookupError` (with a message a dead-lettered task can carry) if the reference is
    malformed, the module does not import, the attribute is missing or not callable.
    """
    try:
        return _resolved[ref]
    except KeyError:
        pass
    from .._decorator import TaskFunction

    module_name, sep, qualname = ref.partition(":")
    if not sep or not module_name or not qualname:
        raise LookupError(f"malformed function reference {ref!r} (expected 'module:qualname')")
    obj = _walk(module_name, qualname)
    if isinstance(obj, TaskFunction):
        obj = obj.__wrapped__
    if not callable(obj):
        raise LookupError(f"{ref} is not callable (it is {_type_name(obj)})")  # noqa: TRY004
    _resolved[ref] = obj
    return obj  # type: ignore[no-any-return]


# ---------------------------------------------------------------- type restoration


class _Plan:
    """What decoding needs to know about one function, computed once."""

    __slots__ = ("arg_structs", "params", "positional", "required", "result", "signature")

    def __init__(self, fn: Callable[..., Any]) -> None:
        hints = _hints(fn)
        self.result: Any = _unwrap_awaitable(hints.pop("return", Any))
        self.signature: inspect.Signature | None = None
        #: annotated parameters: name -> (hint, kind); `Any` ones are left out.
        self.params: dict[str, tuple[Any, Any]] = {}
        #: The fast path (positional arguments only): the hints of the positional
        #: parameters in order, how many of them are required, and array-like Structs
        #: to convert a call of a given arity at once (msgspec caches a Struct's type
        #: information, not a `tuple[...]`'s: several times faster). `positional` is None when a
        #: keyword-only parameter is required (every call then has keywords).
        self.positional: list[Any] | None = None
        self.required = 0
        self.arg_structs: dict[int, Any] = {}
        if not hints:
            return
        try:
            self.signature = inspect.signature(fn)
        except (TypeError, ValueError):
            return
        positional: list[Any] = []
        for name, param in self.signature.parameters.items():
            hint = hints.get(name, Any)
            if hint is not Any:
                self.params[name] = (hint, param.kind)
            if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
                positional.append(hint)
                if param.default is param.empty:
                    self.required = len(positional)
            elif param.kind is param.KEYWORD_ONLY and param.default is param.empty:
                return
        self.positional = positional

    def arg_struct(self, arity: int) -> Any:
        """An array-like Struct of the first `arity` positional parameters' hints, or
        None if none of them needs converting."""
        try:
            return self.arg_structs[arity]
        except KeyError:
            assert self.positional is not None
            hints = self.positional[:arity]
            struct: Any = None
            if any(h is not Any for h in hints):
                fields = [(f"a{i}", h) for i, h in enumerate(hints)]
                struct = msgspec.defstruct("Args", fields, array_like=True)
            return self.arg_structs.setdefault(arity, struct)


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    target: Any = fn.__init__ if isinstance(fn, type) else fn  # type: ignore[misc]
    try:
        hints = dict(typing.get_type_hints(target))
    except Exception:  # noqa: BLE001 (unresolvable annotations: no hints)
        return {}
    if isinstance(fn, type):
        hints.pop("return", None)
    return hints


def _unwrap_awaitable(hint: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is collections.abc.Coroutine and len(args) == 3:
        return args[2]
    if origin is collections.abc.Awaitable and len(args) == 1:
        return args[0]
    return hint


_plans: dict[Any, _Plan] = {}


def _plan(fn: Callable[..., Any]) -> _Plan:
    try:
        return _plans[fn]
    except KeyError:
        plan = _plans[fn] = _Plan(fn)
        return plan


def _dec_hook(hint: Any, value: Any) -> Any:
    validate = getattr(hint, "model_validate", None)
    if validate is not None:
        return validate(value)
    raise NotImplementedError(f"cannot restore {getattr(hint, '__qualname__', hint)}")


def _convert(value: Any, hint: Any) -> Any:
    if isinstance(hint, type) and hasattr(hint, "model_validate"):
        if isinstance(value, hint):
            return value
        return hint.model_validate(value)
    return msgspec.convert(value, hint, strict=False, dec_hook=_dec_hook)


def _restore_call(
    fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    plan = _plan(fn)
    if not plan.params or plan.signature is None:
        return tuple(args), kwargs
    positional = plan.positional
    if not kwargs and positional is not None and plan.required <= len(args) <= len(positional):
        # The usual call: positional arguments only, converted in one msgspec call. On
        # a failure the general path below finds which argument and says so.
        struct = plan.arg_struct(len(args))
        if struct is None:
            return tuple(args), kwargs
        try:
            converted = msgspec.convert(args, struct, strict=False, dec_hook=_dec_hook)
        except Exception:  # noqa: BLE001 (user validators may raise anything: see below)
            converted = None
        if converted is not None:
            return msgspec.structs.astuple(converted), kwargs
    try:
        bound = plan.signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise ValueError(
            f"stored arguments do not match the signature of {_describe(fn)}: {exc}"
        ) from None
    arguments = bound.arguments
    for name, (hint, kind) in plan.params.items():
        if name not in arguments:
            continue
        value = arguments[name]
        try:
            if kind is inspect.Parameter.VAR_POSITIONAL:
                arguments[name] = tuple(_convert(v, hint) for v in value)
            elif kind is inspect.Parameter.VAR_KEYWORD:
                arguments[name] = {k: _convert(v, hint) for k, v in value.items()}
            else:
                arguments[name] = _convert(value, hint)
        except Exception as exc:  # noqa: BLE001 (user validators may raise anything)
            raise ValueError(
                f"stored argument {name!r} of {_describe(fn)} does not convert to "
                f"{_hint_name(hint)}: {type(exc).__name__}: {_safe_str(exc)}"
            ) from None
    return bound.args, bound.kwargs


def _hint_name(hint: Any) -> str:
    if isinstance(hint, type):
        return hint.__qualname__
    return _safe_str(hint)


def _param_names(fn_name: str, count: int) -> list[str | None]:
    """The names of the first `count` positional parameters, where known."""
    names: list[str | None] = [None] * count
    fn = _resolved.get(fn_name)
    if fn is None:
        return names
    try:
        params = list(inspect.signature(fn).parameters.values())
    except Exception:  # noqa: BLE001 (no signature: arguments unnamed)
        return names
    i = 0
    for param in params:
        if i >= count:
            break
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            for j in range(count - i):
                names[i + j] = f"*{param.name}[{j}]"
            break
        if param.kind in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            names[i] = param.name
            i += 1
    return names


def _culprit(
    fn_name: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    encode_one: Callable[[Any], object],
    what: str,
    instead: str,
) -> TypeError:
    """Encode each argument alone; describe the first that fails."""
    names = _param_names(fn_name, len(args))
    labelled: list[tuple[str, Any]] = []
    for i, value in enumerate(args):
        labelled.append((f"argument {i} ({names[i]})" if names[i] else f"argument {i}", value))
    for key, value in kwargs.items():
        labelled.append((f"keyword argument {_safe_str(key)!r}", value))
    for label, value in labelled:
        try:
            encode_one(value)
        except Exception as exc:  # noqa: BLE001 (user code may raise anything)
            return TypeError(
                f"{label} of {fn_name}: {_type_name(value)} is not serializable by "
                f"{what}: {type(exc).__name__}: {_safe_str(exc)}; {instead}"
            )
    return TypeError(f"the arguments of {fn_name} are not serializable by {what}; {instead}")


# ---------------------------------------------------------------- the codecs


class Codec:
    """Encodes a task's `(args, kwargs)` and its result; one instance per serializer."""

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


def _enc_hook(obj: Any) -> Any:
    """What msgspec does not encode natively: pydantic v2 models (duck-typed)."""
    cls = type(obj)
    if hasattr(cls, "model_dump") and hasattr(cls, "model_validate"):
        return obj.model_dump(mode="json")
    raise TypeError(f"objects of type {_type_name(obj)} are not supported")


class MsgpackCodec(Codec):
    """MessagePack via msgspec: plain data, dataclasses, msgspec Structs, pydantic
    models, datetimes, UUIDs, Decimals, enums, sets.

    On decoding, each argument is converted to its parameter's annotation (and a result
    to the return annotation), so annotated values come back as their types. Without
    an annotation (or annotated `Any`) a value comes back as msgspec's plain types:
    tuples and sets as lists, dataclasses/Structs/models as dicts, datetimes, UUIDs and
    Decimals as their MessagePack form (strings, or an aware datetime in UTC). An aware
    datetime is stored as a UTC instant: it comes back equal, with tzinfo UTC.
    """

    name = "msgpack"

    def __init__(self) -> None:
        self._encoder = msgspec.msgpack.Encoder(enc_hook=_enc_hook)
        self._call_decoder = msgspec.msgpack.Decoder(tuple[list[Any], dict[str, Any]])
        self._decoder = msgspec.msgpack.Decoder()

    def encode_call(self, fn_name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        try:
            return self._encoder.encode((args, kwargs))
        except Exception:  # noqa: BLE001 (user code may raise anything: find the argument)
            raise _culprit(
                fn_name, args, kwargs, self._encoder.encode, "msgspec", _SERIALIZER_HINT
            ) from None

    def decode_call(
        self, fn: Callable[..., Any], payload: bytes
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        try:
            args, kwargs = self._call_decoder.decode(payload)
        except Exception as exc:  # noqa: BLE001 (any bad payload is reported, not raised as is)
            raise ValueError(
                f"stored arguments of {_describe(fn)} are not a valid MessagePack "
                f"(args, kwargs) payload: {_safe_str(exc)}"
            ) from None
        return _restore_call(fn, args, kwargs)

    def encode_result(self, value: Any) -> bytes:
        try:
            return self._encoder.encode(value)
        except Exception as exc:  # noqa: BLE001 (user code may raise anything)
            raise TypeError(
                f"the result ({_type_name(value)}) is not serializable by msgspec: "
                f"{type(exc).__name__}: {_safe_str(exc)}; return plain data, a "
                "dataclass, a msgspec.Struct or a pydantic model, or configure "
                "serializer='pickle'"
            ) from None

    def decode_result(self, fn: Callable[..., Any] | None, data: bytes) -> Any:
        try:
            value = self._decoder.decode(data)
        except Exception as exc:  # noqa: BLE001 (any bad payload is reported, not raised as is)
            raise ValueError(f"stored result is not valid MessagePack: {_safe_str(exc)}") from None
        hint = Any if fn is None else _plan(fn).result
        if hint is Any or hint is None or hint is type(None):
            return value
        try:
            return _convert(value, hint)
        except Exception as exc:  # noqa: BLE001 (user validators may raise anything)
            raise ValueError(
                f"stored result of {_describe(fn)} does not convert to {_hint_name(hint)}: "
                f"{type(exc).__name__}: {_safe_str(exc)}"
            ) from None


_MAC_SIZE = hashlib.sha256().digest_size


def _pickle(value: Any) -> bytes:
    return pickle.dumps(value, pickle.HIGHEST_PROTOCOL)


class SignedPickleCodec(Codec):
    """Pickle, prefixed with an HMAC-SHA256 of the pickled bytes under the signing key.

    The signature is checked (in constant time) before anything is unpickled: a row
    written by someone without the key is refused with `ValueError`, never run.
    """

    name = "pickle"

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _sign(self, data: bytes) -> bytes:
        return hmac.new(self._key, data, hashlib.sha256).digest() + data

    def _open(self, blob: bytes, what: str) -> Any:
        blob = bytes(blob)
        mac, data = blob[:_MAC_SIZE], blob[_MAC_SIZE:]
        expected = hmac.new(self._key, data, hashlib.sha256).digest()
        if len(mac) != _MAC_SIZE or not hmac.compare_digest(mac, expected):
            raise ValueError(
                f"stored {what}: the signature does not match (tampered, truncated, or "
                "written with another signing key); it was not unpickled"
            )
        try:
            return pickle.loads(data)
        except Exception as exc:  # noqa: BLE001 (any bad payload is reported, not raised as is)
            raise ValueError(
                f"stored {what} does not unpickle: {type(exc).__name__}: {_safe_str(exc)}"
            ) from None

    def encode_call(self, fn_name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        try:
            return self._sign(_pickle((tuple(args), dict(kwargs))))
        except Exception:  # noqa: BLE001 (user code may raise anything: find the argument)
            raise _culprit(
                fn_name,
                args,
                kwargs,
                _pickle,
                "pickle",
                "pass picklable values (module-level types)",
            ) from None

    def decode_call(
        self, fn: Callable[..., Any], payload: bytes
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        call = self._open(payload, f"arguments of {_describe(fn)}")
        if (
            not isinstance(call, tuple)
            or len(call) != 2
            or not isinstance(call[0], tuple)
            or not isinstance(call[1], dict)
        ):
            raise ValueError(f"stored arguments of {_describe(fn)} are not (args, kwargs)")
        return call[0], call[1]

    def encode_result(self, value: Any) -> bytes:
        try:
            return self._sign(_pickle(value))
        except Exception as exc:  # noqa: BLE001 (user code may raise anything)
            raise TypeError(
                f"the result ({_type_name(value)}) is not picklable: "
                f"{type(exc).__name__}: {_safe_str(exc)}"
            ) from None

    def decode_result(self, fn: Callable[..., Any] | None, data: bytes) -> Any:
        return self._open(data, "result")


_MIN_KEY_BYTES = 16
_codecs: dict[tuple[str, bytes | None], Codec] = {}


def make_codec(serializer: str, signing_key: bytes | str | None) -> Codec:
    """The codec a user configured: "msgpack" (default; the key is ignored) or
    "pickle" (needs a signing key of at least 16 bytes, str or bytes)."""
    if not isinstance(serializer, str):
        raise TypeError(f"serializer must be 'msgpack' or 'pickle', not {_type_name(serializer)}")
    if serializer == "msgpack":
        return codec_for("msgpack", None)
    if serializer != "pickle":
        raise ValueError(f"serializer must be 'msgpack' or 'pickle', not {serializer!r}")
    if signing_key is None:
        raise ValueError(
            "serializer='pickle' needs a signing_key (str or bytes, at least "
            f"{_MIN_KEY_BYTES} bytes): workers only unpickle rows signed with it"
        )
    if isinstance(signing_key, str):
        signing_key = signing_key.encode()
    elif isinstance(signing_key, bytearray | memoryview):
        signing_key = bytes(signing_key)
    if not isinstance(signing_key, bytes):
        raise TypeError(f"signing_key must be str or bytes, not {_type_name(signing_key)}")
    if len(signing_key) < _MIN_KEY_BYTES:
        raise ValueError(
            f"signing_key must be at least {_MIN_KEY_BYTES} bytes once encoded "
            f"(it is {len(signing_key)})"
        )
    return codec_for("pickle", signing_key)


def codec_for(name: str, signing_key: bytes | None) -> Codec:
    """The codec that decodes a stored row written with codec `name`."""
    if name == "msgpack":
        signing_key = None
    elif name == "pickle":
        if not signing_key:
            raise ValueError(
                "this task was stored with signed pickle but this worker has no signing "
                "key: configure the same signing_key as the producer"
            )
    else:
        raise ValueError(f"unknown codec {name!r} (expected 'msgpack' or 'pickle')")
    key = (name, signing_key)
    codec = _codecs.get(key)
    if codec is None:
        codec = MsgpackCodec() if signing_key is None else SignedPickleCodec(signing_key)
        codec = _codecs.setdefault(key, codec)
    return codec
