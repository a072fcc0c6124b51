"""The durable codec: function references, MessagePack round trips restored by
annotations, argument errors that name the argument, and signed pickle."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import functools
import math
import uuid
from typing import Any

import msgspec
import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import offload
from offload.durable import _codec
from offload.durable._codec import codec_for, function_ref, make_codec, resolve_function

KEY = b"k" * 32


# ---------------------------------------------------------------- module-level subjects


def plain(a: int, b: str = "x") -> str:
    return f"{a}{b}"


async def async_fn(x: int) -> list[int]:
    return [x]


@offload.task
def decorated(x: int) -> int:
    return x + 1


class Holder:
    @classmethod
    def cm(cls, x: int) -> int:
        return x

    @staticmethod
    def sm(x: int) -> int:
        return x

    def method(self, x: int) -> int:
        return x


def _original(x: int) -> int:
    return x


renamed = _original  # imports back as `_original`: fine; `renamed` is not its name


def shadowed() -> None:
    pass


_first_shadowed = shadowed


def shadowed() -> None:  # type: ignore[no-redef]  # shadowed on purpose
    pass


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclasses.dataclass
class Point:
    x: int
    y: float
    when: dt.datetime


class Item(msgspec.Struct):
    name: str
    tags: frozenset[str]


class User(pydantic.BaseModel):
    name: str
    joined: dt.date
    id: uuid.UUID


def typed(
    i: int,
    f: float,
    s: str,
    b: bytes,
    n: None,
    flag: bool,
    items: list[int],
    mapping: dict[str, float],
    pair: tuple[int, str],
    naive: dt.datetime,
    aware: dt.datetime,
    day: dt.date,
    clock: dt.time,
    span: dt.timedelta,
    uid: uuid.UUID,
    money: decimal.Decimal,
    color: Color,
    level: Level,
    point: Point,
    item: Item,
    user: User,
    numbers: set[int],
    frozen: frozenset[str],
    nested: dict[str, list[tuple[int, Point]]],
    *rest: uuid.UUID,
    **extra: dt.date,
) -> None:
    pass


def positional(
    point: Point, user: User, when: dt.datetime, tags: set[str], level: Level = Level.LOW
) -> None:
    pass


def untyped(a, b, c):  # type: ignore[no-untyped-def]
    pass


def any_arg(value: Any) -> Any:
    return value


def returns_point() -> Point:
    return Point(1, 2.0, dt.datetime(2020, 1, 1))


async def returns_users() -> list[User]:
    return []


def target(first: int, second: str, *more: int, **options: int) -> None:
    pass


class Hostile:
    """Every dunder a codec might be tempted to call raises."""

    def __repr__(self) -> str:
        raise RuntimeError("repr")

    def __str__(self) -> str:
        raise RuntimeError("str")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("eq")

    def __hash__(self) -> int:
        raise RuntimeError("hash")

    def __reduce__(self) -> Any:
        raise RuntimeError("reduce")


class CallableThing:
    def __call__(self) -> None:
        pass


class HostileCallable(Hostile):
    def __call__(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"getattr {name}")


# ---------------------------------------------------------------- function references


def test_function_ref_accepts_module_level_functions() -> None:
    assert function_ref(plain) == (f"{__name__}:plain", plain)
    assert function_ref(async_fn) == (f"{__name__}:async_fn", async_fn)
    assert resolve_function(f"{__name__}:plain") is plain


def test_function_ref_of_a_task_function_names_the_wrapper_and_runs_the_function() -> None:
    ref, run = function_ref(decorated)
    assert ref == f"{__name__}:decorated"
    assert run is decorated.__wrapped__
    assert function_ref(decorated.__wrapped__) == (ref, decorated.__wrapped__)
    assert resolve_function(ref) is decorated.__wrapped__


def test_function_ref_accepts_classmethods_staticmethods_classes_and_builtins() -> None:
    ref, run = function_ref(Holder.cm)
    assert ref == f"{__name__}:Holder.cm" and run(3) == 3
    assert resolve_function(ref)(4) == 4
    assert function_ref(Holder.sm) == (f"{__name__}:Holder.sm", Holder.sm)
    assert function_ref(Point)[0] == f"{__name__}:Point"
    assert function_ref(len) == ("builtins:len", len)
    assert function_ref(math.sqrt) == ("math:sqrt", math.sqrt)
    assert function_ref(_original) == function_ref(renamed)


def test_function_ref_caches() -> None:
    first = function_ref(plain)
    assert function_ref(plain) is first
    assert _codec._refs[plain] is first


@pytest.mark.parametrize(
    ("fn", "words"),
    [
        (lambda: None, "lambda"),
        (functools.partial(plain, 1), "functools.partial"),
        (Holder().method, "bound to an instance"),
        ([].append, "bound to an instance"),
        (CallableThing(), "callable instance"),
        (_first_shadowed, "imports back to a different object"),
    ],
    ids=["lambda", "partial", "bound-method", "bound-builtin", "callable-instance", "shadowed"],
)
def test_function_ref_refuses_what_cannot_be_imported_back(fn: Any, words: str) -> None:
    with pytest.raises(TypeError, match=words) as info:
        function_ref(fn)
    assert (
        "module level" in str(info.value)
        or "module-level" in str(info.value)
        or ("pass" in str(info.value))
    )


def test_function_ref_refuses_closures() -> None:
    def inner() -> None:
        pass

    with pytest.raises(TypeError, match="defined inside another function"):
        function_ref(inner)


def test_function_ref_refuses_non_callables() -> None:
    with pytest.raises(TypeError, match="needs a callable, not builtins.int"):
        function_ref(3)  # type: ignore[arg-type]


def test_function_ref_survives_hostile_callables() -> None:
    with pytest.raises(TypeError, match="callable instance"):
        function_ref(HostileCallable())
    with pytest.raises(TypeError, match="bound to an instance"):
        function_ref(HostileCallable().__call__)


@pytest.mark.parametrize(
    ("ref", "words"),
    [
        ("no_such_module_xyz:f", "does not import"),
        (f"{__name__}:missing", "has no attribute"),
        (f"{__name__}:Holder.missing", "has no attribute"),
        (f"{__name__}:KEY", "not callable"),
        ("no-colon", "malformed"),
    ],
)
def test_resolve_function_raises_lookup_error(ref: str, words: str) -> None:
    with pytest.raises(LookupError, match=words):
        resolve_function(ref)


# ---------------------------------------------------------------- msgpack round trips

AWARE = dt.datetime(2021, 5, 6, 7, 8, 9, 123456, tzinfo=dt.timezone.utc)


def _typed_args() -> tuple[tuple[Any, ...], dict[str, Any]]:
    when = dt.datetime(2020, 1, 2, 3, 4, 5, 6)
    args = (
        -(2**40),
        1.5,
        "héllo",
        b"\x00\xff",
        None,
        True,
        [1, 2],
        {"a": 0.5},
        (7, "seven"),
        when,
        AWARE,
        dt.date(2020, 2, 29),
        dt.time(23, 59, 58, 999),
        dt.timedelta(days=-1, seconds=5, microseconds=7),
        uuid.UUID(int=12345),
        decimal.Decimal("3.14159265358979323846"),
        Color.BLUE,
        Level.HIGH,
        Point(1, 2.5, when),
        Item("thing", frozenset({"a", "b"})),
        User(name="ann", joined=dt.date(2019, 1, 1), id=uuid.UUID(int=7)),
        {1, 2, 3},
        frozenset({"x"}),
        {"k": [(1, Point(2, 3.0, AWARE))]},
        uuid.UUID(int=1),
        uuid.UUID(int=2),
    )
    return args, {"d1": dt.date(2000, 1, 1)}


def test_msgpack_round_trips_every_type_through_annotations() -> None:
    codec = make_codec("msgpack", None)
    args, kwargs = _typed_args()
    payload = codec.encode_call("typed", args, kwargs)
    back_args, back_kwargs = codec.decode_call(typed, payload)
    assert back_args == args
    assert back_kwargs == kwargs
    for before, after in zip(args, back_args, strict=True):
        assert type(after) is type(before)
    assert back_args[9].tzinfo is None  # naive stays naive
    assert back_args[10].utcoffset() == dt.timedelta(0)
    assert type(back_args[23]["k"][0]) is tuple


@pytest.mark.parametrize("arity", [4, 5])
def test_msgpack_positional_calls_round_trip(arity: int) -> None:
    codec = make_codec("msgpack", None)
    args = (
        Point(1, 2.0, AWARE),
        User(name="b", joined=dt.date(2020, 3, 1), id=uuid.UUID(int=9)),
        dt.datetime(1999, 12, 31, 23, 59, 59),
        {"x", "y"},
        Level.HIGH,
    )[:arity]
    for _ in range(2):  # the second time through the cached plan
        back, kwargs = codec.decode_call(positional, codec.encode_call("positional", args, {}))
        assert back == args and kwargs == {}
        assert [type(v) for v in back] == [type(v) for v in args]
    with pytest.raises(ValueError, match="argument 'tags' of .*positional does not convert"):
        codec.decode_call(positional, codec.encode_call("positional", (*args[:3], 5), {}))


def test_msgpack_aware_datetime_in_another_zone_comes_back_as_the_same_instant() -> None:
    codec = make_codec("msgpack", None)
    zone = dt.timezone(dt.timedelta(hours=5, minutes=30))
    when = dt.datetime(2021, 1, 1, 12, 0, tzinfo=zone)
    (back,), _ = codec.decode_call(any_arg, codec.encode_call("f", (when,), {}))
    assert back == when and back.utcoffset() == dt.timedelta(0)


def test_msgpack_without_annotations_gives_plain_types() -> None:
    codec = make_codec("msgpack", None)
    args = ((1, 2), {3}, Point(1, 2.0, dt.datetime(2020, 1, 1)))
    back, kwargs = codec.decode_call(untyped, codec.encode_call("untyped", args, {}))
    assert back == ([1, 2], [3], {"x": 1, "y": 2.0, "when": "2020-01-01T00:00:00"})
    assert kwargs == {}


def test_msgpack_results_convert_with_the_return_annotation() -> None:
    codec = make_codec("msgpack", None)
    point = returns_point()
    assert codec.decode_result(returns_point, codec.encode_result(point)) == point
    users = [User(name="a", joined=dt.date(2020, 1, 1), id=uuid.UUID(int=3))]
    back = codec.decode_result(returns_users, codec.encode_result(users))
    assert back == users and type(back[0]) is User
    assert codec.decode_result(None, codec.encode_result({"a": 1})) == {"a": 1}
    assert codec.decode_result(plain, codec.encode_result("x")) == "x"


def test_msgpack_unserializable_result_is_a_type_error() -> None:
    codec = make_codec("msgpack", None)
    with pytest.raises(TypeError, match=r"result .*Hostile.* not serializable by msgspec"):
        codec.encode_result(Hostile())


def test_msgpack_names_the_unserializable_argument() -> None:
    codec = make_codec("msgpack", None)
    ref, _ = function_ref(target)
    with pytest.raises(TypeError) as info:
        codec.encode_call(ref, (1, object()), {})
    message = str(info.value)
    assert message.startswith(f"argument 1 (second) of {ref}: builtins.object")
    assert "not serializable by msgspec" in message and "serializer='pickle'" in message
    with pytest.raises(TypeError, match=r"argument 3 \(\*more\[1\]\)"):
        codec.encode_call(ref, (1, "a", 2, object()), {})
    with pytest.raises(TypeError, match=r"keyword argument 'options_x' of .*Hostile"):
        codec.encode_call(ref, (1, "a"), {"options_x": Hostile()})
    with pytest.raises(TypeError, match=r"^argument 0 of unknown_fn: .*Hostile"):
        codec.encode_call("unknown_fn", (Hostile(),), {})


def test_msgpack_hostile_object_inside_a_dataclass_names_the_argument() -> None:
    codec = make_codec("msgpack", None)
    bad = Point(1, 2.0, Hostile())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^argument 0 of f: .*Point"):
        codec.encode_call("f", (bad,), {})


def test_msgpack_bad_payloads_are_value_errors() -> None:
    codec = make_codec("msgpack", None)
    with pytest.raises(ValueError, match="not a valid MessagePack"):
        codec.decode_call(plain, b"\xc1garbage")
    with pytest.raises(ValueError, match="not a valid MessagePack"):
        codec.decode_call(plain, msgspec.msgpack.encode([1, 2]))
    with pytest.raises(ValueError, match="do not match the signature"):
        codec.decode_call(plain, codec.encode_call("plain", (1, "a", "extra"), {}))
    with pytest.raises(ValueError, match="'a' of .*plain does not convert to int"):
        codec.decode_call(plain, codec.encode_call("plain", ("nope",), {}))
    with pytest.raises(ValueError, match="'user' .* does not convert to User"):
        args, kwargs = _typed_args()
        broken = args[:20] + ({"name": "x"},) + args[21:]
        codec.decode_call(typed, codec.encode_call("typed", broken, kwargs))
    with pytest.raises(ValueError, match="result of .*returns_point does not convert"):
        codec.decode_result(returns_point, codec.encode_result("not a point"))


# ---------------------------------------------------------------- signed pickle


def test_pickle_round_trips_exactly() -> None:
    codec = make_codec("pickle", KEY)
    args, kwargs = _typed_args()
    assert codec.decode_call(typed, codec.encode_call("typed", args, kwargs)) == (args, kwargs)
    assert codec.decode_result(None, codec.encode_result({1, 2})) == {1, 2}


def test_pickle_refuses_tampered_truncated_and_foreign_payloads() -> None:
    codec = make_codec("pickle", KEY)
    payload = codec.encode_call("plain", (1,), {"b": "x"})
    for i in (0, 5, 31, 32, len(payload) - 1):
        tampered = bytearray(payload)
        tampered[i] ^= 1
        with pytest.raises(ValueError, match="signature does not match"):
            codec.decode_call(plain, bytes(tampered))
    for cut in (0, 10, 32, len(payload) - 1):
        with pytest.raises(ValueError, match="signature does not match"):
            codec.decode_call(plain, payload[:cut])
    other = make_codec("pickle", "another key of enough length")
    with pytest.raises(ValueError, match="signature does not match"):
        other.decode_call(plain, payload)
    with pytest.raises(ValueError, match="signature does not match"):
        other.decode_result(None, codec.encode_result(1))


def test_pickle_names_the_argument_whose_pickling_raises() -> None:
    codec = make_codec("pickle", KEY)
    ref, _ = function_ref(target)
    with pytest.raises(TypeError, match=r"^argument 1 \(second\) of .*Hostile.* by pickle"):
        codec.encode_call(ref, (1, Hostile()), {})
    with pytest.raises(TypeError, match=r"keyword argument 'k' of .*by pickle"):
        codec.encode_call(ref, (1, "a"), {"k": lambda: None})
    with pytest.raises(TypeError, match="result .*Hostile.* not picklable"):
        codec.encode_result(Hostile())


# ---------------------------------------------------------------- configuration


def test_make_codec_validates_the_configuration() -> None:
    assert make_codec("msgpack", None).name == "msgpack"
    assert make_codec("msgpack", "ignored") is make_codec("msgpack", None)
    assert make_codec("pickle", "x" * 16) is make_codec("pickle", b"x" * 16)
    assert make_codec("pickle", KEY).name == "pickle"
    with pytest.raises(ValueError, match="'msgpack' or 'pickle', not 'json'"):
        make_codec("json", None)
    with pytest.raises(TypeError, match="serializer must be"):
        make_codec(None, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs a signing_key"):
        make_codec("pickle", None)
    with pytest.raises(ValueError, match="at least 16 bytes"):
        make_codec("pickle", "short")
    with pytest.raises(TypeError, match="str or bytes"):
        make_codec("pickle", 12345678901234567890)  # type: ignore[arg-type]


def test_codec_for_the_worker_side() -> None:
    assert codec_for("msgpack", None) is make_codec("msgpack", None)
    assert codec_for("pickle", KEY) is make_codec("pickle", KEY)
    with pytest.raises(ValueError, match="unknown codec 'yaml'"):
        codec_for("yaml", None)
    with pytest.raises(ValueError, match="stored with signed pickle but this worker has no"):
        codec_for("pickle", None)


# ---------------------------------------------------------------- property


def _plain_data() -> st.SearchStrategy[Any]:
    leaves = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**63), max_value=2**64 - 1)
        | st.floats(allow_nan=False)
        | st.text()
        | st.binary()
    )
    return st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
        max_leaves=20,
    )


def _strict_equal(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(map(_strict_equal, a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_strict_equal(a[k], b[k]) for k in a)
    if isinstance(a, float):
        return math.copysign(1, a) == math.copysign(1, b) and a == b
    return bool(a == b)


@settings(deadline=None, max_examples=200)
@given(
    args=st.lists(_plain_data(), max_size=1),
    kwargs=st.dictionaries(st.just("value"), _plain_data()),
)
def test_plain_data_round_trips_exactly(args: list[Any], kwargs: dict[str, Any]) -> None:
    codec = make_codec("msgpack", None)
    if not args and not kwargs:
        args = [None]
    back_args, back_kwargs = codec.decode_call(
        any_arg, codec.encode_call("any_arg", tuple(args), kwargs if not args else {})
    )
    expected_kwargs = kwargs if not args else {}
    assert _strict_equal(list(back_args), args)
    assert _strict_equal(back_kwargs, expected_kwargs)
