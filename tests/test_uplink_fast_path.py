"""``Batch.from_wire`` validates readings with a fast path for plainly well-formed ones; it
must accept exactly what :meth:`Reading.from_wire` accepts, build the same readings, and
refuse everything else with the same ``UplinkError`` (reason and detail)."""

from __future__ import annotations

import enum
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.outbox import reading_mix
from protocols import uplink
from protocols.uplink import BATCH_VERSION, READING_KINDS, Batch, Reading, UplinkError

T0 = 1_767_225_600_000
INT_MAX = 2**63 - 1


class _Str(str):
    pass


class _Int(int):
    pass


class _Dict(dict):  # type: ignore[type-arg]
    pass


class _Enum(enum.IntEnum):
    ONE = 1


def _batch(readings: list[Any]) -> dict[str, Any]:
    return {"v": BATCH_VERSION, "gw": "gw-1", "seq": 1, "created_ms": T0, "readings": readings}


def _outcome(fn: Any, *args: Any) -> tuple[Any, ...]:
    """What a validation did, comparable between the two paths: the built reading's fields
    (with their exact types, and the very data object), or the error's reason and detail."""
    try:
        r = fn(*args)
    except UplinkError as exc:
        return ("refused", type(exc), exc.reason, exc.detail, str(exc))
    except Exception as exc:  # any other exception must also be the same one
        return ("raised", type(exc), str(exc))
    if isinstance(r, tuple):
        return ("ok", *map(_describe, r))
    return ("ok", _describe(r))


def _describe(r: Reading) -> tuple[Any, ...]:
    return (type(r), r.kind, type(r.kind), r.device_id, type(r.device_id), r.ts_ms,
            type(r.ts_ms), r.recv_ms, type(r.recv_ms), id(r.data))


def _fast(obj: Any) -> tuple[Any, ...]:
    return _outcome(lambda: Batch.from_wire(_batch([obj])).readings[0])


def _full(obj: Any) -> tuple[Any, ...]:
    return _outcome(Reading.from_wire, obj)


# -- generated readings ----------------------------------------------------------------------

_FLAT = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1),
                  st.floats(allow_nan=True), st.text(max_size=20))
_WEIRD = st.one_of(
    _FLAT,
    st.sampled_from([True, False, None, 0, -1, 2**63, 2**64, 2**200, -2**200, 0.0, 1.5,
                     float("nan"), float("inf"), "", "x" * 129, b"bytes", [], {}, [1, "a"],
                     {"k": 1}, _Str("s"), _Int(3), _Enum.ONE, _Dict(), object()]))


def _value_for(types: tuple[type, ...]) -> st.SearchStrategy[Any]:
    options: list[st.SearchStrategy[Any]] = []
    for t in types:
        if t is bool:
            options.append(st.booleans())
        elif t is int:
            options.append(st.integers(-2**63, 2**64 - 1))
        elif t is float:
            options.append(st.floats(allow_nan=True, allow_infinity=True))
        elif t is str:
            options.append(st.text(max_size=30))
        elif t is type(None):
            options.append(st.none())
    return st.one_of(options)


@st.composite
def valid_wire(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(sorted(READING_KINDS)))
    data: dict[str, Any] = {name: draw(_value_for(types))
                            for name, types in READING_KINDS[kind][1].items()}
    extra = draw(st.dictionaries(st.text(max_size=10), _FLAT, max_size=3))
    for k, v in extra.items():
        data.setdefault(k, v)
    return {"k": kind, "d": draw(st.text(min_size=1, max_size=128)),
            "t": draw(st.integers(0, INT_MAX)), "r": draw(st.integers(0, INT_MAX)),
            "v": data}


@st.composite
def mutated_wire(draw: st.DrawFn) -> Any:
    obj: dict[Any, Any] = draw(valid_wire())
    how = draw(st.sampled_from(["top_value", "top_drop", "top_extra", "field_value",
                                "field_drop", "data_key", "data_type", "not_a_map",
                                "map_subclass", "unknown_kind", "bounds"]))
    data = obj["v"]
    fields = list(READING_KINDS[obj["k"]][1])
    if how == "top_value":
        obj[draw(st.sampled_from("kdtrv"))] = draw(_WEIRD)
    elif how == "top_drop":
        del obj[draw(st.sampled_from("kdtrv"))]
    elif how == "top_extra":
        obj[draw(st.one_of(st.text(max_size=3), st.integers()))] = draw(_FLAT)
    elif how == "field_value" and fields:
        data[draw(st.sampled_from(fields))] = draw(_WEIRD)
    elif how == "field_drop" and fields:
        del data[draw(st.sampled_from(fields))]
    elif how == "data_key":
        data[draw(st.one_of(st.integers(), st.binary(max_size=3), st.just(_Str("sub"))))] = 1
    elif how == "data_type":
        obj["v"] = draw(st.sampled_from([[], None, "v", 1, _Dict(data)]))
    elif how == "not_a_map":
        return draw(st.sampled_from([None, [], "reading", 1, list(obj.items())]))
    elif how == "map_subclass":
        return _Dict(obj)
    elif how == "unknown_kind":
        obj["k"] = draw(st.text(max_size=12).filter(lambda k: k not in READING_KINDS))
    elif how == "bounds":
        key = draw(st.sampled_from("dtr"))
        obj[key] = ("" if key == "d" else draw(st.sampled_from([-1, INT_MAX + 1, 2**64])))
    return obj


@settings(max_examples=600)
@given(valid_wire())
def test_valid_readings_agree(obj: dict[str, Any]) -> None:
    assert _fast(obj) == _full(obj)


@settings(max_examples=1500)
@given(mutated_wire())
def test_mutated_readings_agree(obj: Any) -> None:
    assert _fast(obj) == _full(obj)


@settings(max_examples=200)
@given(st.lists(st.one_of(valid_wire(), mutated_wire()), max_size=12))
def test_whole_batches_agree(objs: list[Any]) -> None:
    """A batch is its readings validated in order: the first refused one is the error."""
    def full() -> tuple[Reading, ...]:
        return tuple(Reading.from_wire(o) for o in objs)

    assert _outcome(lambda: Batch.from_wire(_batch(objs)).readings) == _outcome(full)


# -- hand-picked edges -----------------------------------------------------------------------

def _ok(kind: str = "alarm", **top: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {"k": kind, "d": "modbus:1", "t": T0, "r": T0 + 1,
                           "v": {"alarm": "door_open"}}
    obj.update(top)
    return obj


@pytest.mark.parametrize("obj", [
    _ok(),
    _ok(t=True), _ok(r=False), _ok(t=1.0), _ok(t=None), _ok(t=-1), _ok(t=INT_MAX),
    _ok(t=INT_MAX + 1), _ok(r=2**200), _ok(t=_Int(5)), _ok(t=_Enum.ONE),
    _ok(d=""), _ok(d="x" * 128), _ok(d="x" * 129), _ok(d=_Str("dev")), _ok(d=7),
    _ok(k=_Str("alarm")), _ok(k="teleport"), _ok(k=None), _ok(k=1),
    _ok(v={"alarm": True}), _ok(v={"alarm": None}), _ok(v={}), _ok(v={"alarm": "a", 1: 2}),
    _ok(v={"alarm": _Str("a")}), _ok(v=_Dict(alarm="a")), _ok(v=[("alarm", "a")]),
    _ok(x=1),
    _ok("weight", v={"weight_kg": True, "stable": None}),
    _ok("weight", v={"weight_kg": None, "stable": True}),
    _ok("weight", v={"weight_kg": 1, "stable": 1}),
    _ok("weigh_event", v={"weight_kg": _Int(3)}),
    _ok("weigh_event", v={"weight_kg": float("nan")}),
    _ok("tag_sighting", v={"epc": "E2", "antenna": None, "count": 2, "first_ms": 1,
                           "last_ms": 2, "rssi_max_dbm": None}),
    _ok("tag_sighting", v={"epc": "E2", "antenna": 1.0, "count": 2, "first_ms": 1,
                           "last_ms": 2, "rssi_max_dbm": None}),
    _ok("device_online", v={}), _ok("device_online", v={"anything": [1, {"x": 2}]}),
])
def test_edges_agree(obj: dict[str, Any]) -> None:
    assert _fast(obj) == _full(obj)


def test_missing_key_with_same_size_is_refused_like_the_full_check() -> None:
    obj = _ok()
    del obj["r"]
    obj["x"] = T0
    assert _fast(obj)[:3] == ("refused", UplinkError, "bad_reading")
    assert _fast(obj) == _full(obj)


def test_typical_readings_take_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bench's reading mix never needs the full check (so the fast path is real), and
    one odd reading among them does."""
    wire = [r.to_wire() for r in reading_mix(2000, random.Random(3))]
    calls: list[Any] = []
    full = Reading.from_wire

    def counting(obj: Any) -> Reading:
        calls.append(obj)
        return full(obj)

    monkeypatch.setattr(uplink.Reading, "from_wire", staticmethod(counting))
    batch = Batch.from_wire(_batch(wire))
    assert calls == []
    assert [r.to_wire() for r in batch.readings] == wire
    odd = _ok(d=_Str("dev"))
    batch = Batch.from_wire(_batch([*wire[:5], odd]))
    assert calls == [odd] and batch.readings[-1].device_id == "dev"
