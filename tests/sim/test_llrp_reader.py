"""The simulated LLRP reader served on a real TCP socket and driven by a plain socket client
with the client-role codec: the whole session flow, faults, and the ROSpec state table."""

from __future__ import annotations

import math
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import pytest

from firmware_sim import Faults, ManualClock, TcpLink
from firmware_sim.llrp_reader import (
    ACTIVE,
    DELETED,
    DISABLED,
    INACTIVE,
    MAX_ROUNDS_PER_TICK,
    ROSPEC_REQUESTS,
    TRANSITIONS,
    LlrpReader,
)
from firmware_sim.r2000_reader import SimTag
from protocols import llrp
from protocols._base import FrameError, Message
from protocols.messages import TagRead

EPCS = [bytes.fromhex(f"E2801170000B{i:012X}") for i in range(10)]
# one non-96-bit EPC so the EPCData TLV path runs over the wire too
EPCS.append(bytes.fromhex("E2801170000B00000000000A00FF"))
WAIT_S = 10.0

Items = list[Message | FrameError]
M = TypeVar("M", bound=Message)


def _population(prob: float = 1.0) -> list[SimTag]:
    return [SimTag(epc=e, antennas=frozenset({1 + i % 2}), rssi_dbm=-40 - i,
                   read_probability=prob) for i, e in enumerate(EPCS)]


class _Client:
    """A bare TCP client: bytes in, client-role decoder, everything it decoded kept."""

    def __init__(self, link: TcpLink) -> None:
        self.sock = socket.create_connection((link.host, link.port), timeout=WAIT_S)
        self.sock.settimeout(0.05)
        self.dec = llrp.Decoder()
        self.items: Items = []
        self.received = 0

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def poll(self) -> None:
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            return
        self.received += len(chunk)
        self.items += self.dec.feed(chunk)

    def read_until(self, stop: Callable[[Items], bool], timeout: float = WAIT_S) -> Items:
        deadline = time.monotonic() + timeout
        while not stop(self.items) and time.monotonic() < deadline:
            self.poll()
        assert stop(self.items), f"gave up waiting; decoded so far: {self.items[-5:]!r}"
        return self.items

    def messages(self, kind: type[M]) -> list[M]:
        return [m for m in self.items if isinstance(m, kind)]


@contextmanager
def _client(link: TcpLink) -> Iterator[_Client]:
    c = _Client(link)
    try:
        yield c
    finally:
        c.sock.close()


def _wait(cond: Callable[[], bool], timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert cond(), "the simulated reader did not get there"


def _count(kind: type, n: int) -> Callable[[Items], bool]:
    return lambda items: sum(isinstance(m, kind) for m in items) >= n


def _response(items: Items, name: str) -> llrp.LlrpResponse:
    (resp,) = [m for m in items if isinstance(m, llrp.LlrpResponse) and m.type_name == name]
    return resp


def test_full_session_over_tcp() -> None:
    clock = ManualClock()
    t0 = clock.now()
    reader = LlrpReader(tags=_population(), seed=1, clock=clock, keepalive_interval_s=30.0,
                        max_antennas=2, connected_antennas=frozenset({1, 2}),
                        firmware="sim 9.9")
    spec = llrp.RoSpec(7, antennas=(1, 2))  # Null start trigger: needs START_ROSPEC
    with TcpLink(reader) as link, _client(link) as c:
        # 1. the reader speaks first
        c.read_until(_count(llrp.ReaderEvent, 1))
        assert c.items[0] == llrp.ReaderEvent(1, round(t0 * 1e6), True, 0,
                                              ("ConnectionAttemptEvent",))
        # 2. capabilities and the ROSpec, pipelined like sllurp-style clients do
        c.send(llrp.encode_get_reader_capabilities(101) + llrp.encode_delete_rospec(102)
               + llrp.encode_add_rospec(103, spec) + llrp.encode_enable_rospec(104, 7)
               + llrp.encode_start_rospec(105, 7))
        c.read_until(lambda items: _count(llrp.LlrpResponse, 5)(items)
                     and _count(TagRead, len(EPCS))(items))
        caps = _response(c.items, "GET_READER_CAPABILITIES_RESPONSE")
        assert caps.ok and caps.message_id == 101
        assert caps.capabilities == llrp.ReaderCapabilities(2, 0, 0, "sim 9.9", True)
        for mid, name in ((102, "DELETE_ROSPEC_RESPONSE"), (103, "ADD_ROSPEC_RESPONSE"),
                          (104, "ENABLE_ROSPEC_RESPONSE"), (105, "START_ROSPEC_RESPONSE")):
            resp = _response(c.items, name)
            assert (resp.message_id, resp.status, resp.status_name) == (mid, 0, "M_Success")
        # 3. the first inventory round runs at START time; N=1 -> one report per tag
        first = c.messages(TagRead)
        assert sorted(t.epc for t in first) == sorted(e.hex().upper() for e in EPCS)
        for i, epc in enumerate(EPCS):
            (tag,) = [t for t in first if t.epc == epc.hex().upper()]
            assert tag.antenna == 1 + i % 2
            assert tag.device_ts_ms == round(t0 * 1000)
            assert tag.read_count == reader.reads_per_round
            assert tag.rssi_dbm is not None and abs(tag.rssi_dbm - (-40 - i)) <= 2
        # 4. one report interval later, the next round with the new first-seen time
        clock.advance(reader.report_interval_s)
        c.read_until(_count(TagRead, 2 * len(EPCS)))
        second = c.messages(TagRead)[len(EPCS):]
        assert {t.device_ts_ms for t in second} == {round((t0 + 1) * 1000)}
        # 5. stop, then a keepalive is due: answer it
        c.send(llrp.encode_stop_rospec(106, 7))
        c.read_until(lambda items: any(isinstance(m, llrp.LlrpResponse)
                                       and m.type_name == "STOP_ROSPEC_RESPONSE"
                                       for m in items))
        clock.advance(30.0)
        c.read_until(_count(llrp.Keepalive, 1))
        (ka,) = c.messages(llrp.Keepalive)
        c.send(llrp.encode_keepalive_ack(ka.message_id))
        _wait(lambda: reader.keepalive_acks == 1)
        # 6. goodbye
        c.send(llrp.encode_close_connection(107))
        c.read_until(lambda items: any(isinstance(m, llrp.LlrpResponse) and
                                       m.type_name == "CLOSE_CONNECTION_RESPONSE"
                                       for m in items))
        assert not reader.session_open
    assert c.dec.errors == 0
    assert len(c.messages(TagRead)) == 2 * len(EPCS), "no reports after STOP_ROSPEC"
    # what the client decoded is exactly what the reader sent, in order
    expected = [m for f in reader.clean_frames() for m in llrp.Decoder().feed(f)]
    assert c.items == expected
    assert [r.type_name for r in reader.requests] == [
        "GET_READER_CAPABILITIES", "DELETE_ROSPEC", "ADD_ROSPEC", "ENABLE_ROSPEC",
        "START_ROSPEC", "STOP_ROSPEC", "KEEPALIVE_ACK", "CLOSE_CONNECTION"]


def _wire_bytes(reader: LlrpReader) -> int:
    return sum(len(s.garbage_before) + len(s.frame) for s in reader.sent if not s.dropped)


def _last_is_close_response(reader: LlrpReader) -> bool:
    if not reader.sent:
        return False
    out = llrp.Decoder().feed(reader.sent[-1].frame)
    return len(out) == 1 and isinstance(out[0], llrp.LlrpResponse) and \
        out[0].type_name == "CLOSE_CONNECTION_RESPONSE"


@pytest.mark.parametrize("seed", [3, 11])
def test_faults_split_garbage_and_corruption_lose_only_corrupted_messages(seed: int) -> None:
    clock = ManualClock()
    faults = Faults(split=0.5, garbage=0.3, bad_checksum=0.1)
    reader = LlrpReader(tags=_population(), seed=seed, clock=clock, faults=faults)
    spec = llrp.RoSpec(1, start_trigger=llrp.START_TRIGGER_IMMEDIATE, report_n=4)
    with TcpLink(reader) as link, _client(link) as c:
        c.send(llrp.encode_delete_rospec(1) + llrp.encode_add_rospec(2, spec)
               + llrp.encode_enable_rospec(3, 1))
        _wait(lambda: len(reader.requests) == 3 and reader.rounds == 1)
        for k in range(2, 6):
            clock.advance(reader.report_interval_s)
            _wait(lambda k=k: reader.rounds == k)  # type: ignore[misc]
        c.send(llrp.encode_close_connection(4))
        _wait(lambda: _last_is_close_response(reader))
        c.read_until(lambda _: c.received >= _wire_bytes(reader))
    assert c.received == _wire_bytes(reader)
    assert reader.injector.counts["split"] > 0 and reader.injector.counts["garbage"] > 0
    corrupted = [s.frame for s in reader.sent if s.corrupted]
    assert corrupted, "this seed must corrupt at least one message"
    # every intact message decodes, in order, to exactly what the reader meant to send
    decoded = [m for m in c.items if isinstance(m, Message)]
    assert decoded == [m for f in reader.clean_frames() for m in llrp.Decoder().feed(f)]
    # and nothing else: every corrupted message and every garbage byte is reported
    # (a corrupted message right after garbage is folded into that garbage report: the
    # decoder is hunting for a version-1 header then)
    errs = [e for e in c.items if isinstance(e, FrameError)]
    bad_field = [e.raw for e in errs if e.kind == "bad_field"]
    corrupted_wire = [LlrpReader().corrupt(f) for f in corrupted]
    assert bad_field and all(raw in corrupted_wire for raw in bad_field)
    assert {e.kind for e in errs} <= {"bad_field", "garbage"}
    assert sum(len(e.raw) for e in errs) == sum(
        len(s.garbage_before) + (len(s.frame) if s.corrupted else 0) for s in reader.sent)


def test_every_connection_gets_its_own_reader_event() -> None:
    clock = ManualClock()
    reader = LlrpReader(seed=2, clock=clock)
    with TcpLink(reader) as link:
        with _client(link) as c:
            c.read_until(_count(llrp.ReaderEvent, 1))
            c.send(llrp.encode_close_connection(1))
            c.read_until(_count(llrp.LlrpResponse, 1))
        clock.advance(5.0)
        with _client(link) as c2:
            c2.read_until(_count(llrp.ReaderEvent, 1))
        assert link.connections == 2
    assert c.messages(llrp.ReaderEvent)[0].message_id == 1
    assert c2.items == [llrp.ReaderEvent(2, round(clock.now() * 1e6), True, 0,
                                         ("ConnectionAttemptEvent",))]
    assert reader.session_open  # the second client did not say goodbye


# -- the session logic without a socket ------------------------------------------------------
def _session(**kw: object) -> tuple[LlrpReader, ManualClock]:
    clock = ManualClock()
    reader = LlrpReader(tags=_population(), seed=5, clock=clock, **kw)  # type: ignore[arg-type]
    reader.on_connect()
    return reader, clock


def _ask(reader: LlrpReader, frame: bytes) -> list[Message]:
    out: list[Message] = []
    dec = llrp.Decoder()
    for f in reader.handle(frame):
        for item in dec.feed(f):
            assert isinstance(item, Message), item
            out.append(item)
    return out


def _drive_to(reader: LlrpReader, state: int) -> None:
    assert _ask(reader, llrp.encode_add_rospec(1, llrp.RoSpec(1)))[0].ok  # type: ignore[attr-defined]
    if state in (INACTIVE, ACTIVE):
        _ask(reader, llrp.encode_enable_rospec(2, 1))
    if state == ACTIVE:
        _ask(reader, llrp.encode_start_rospec(3, 1))
    assert reader.rospecs[1].state == state


_ENCODERS = {
    "ENABLE_ROSPEC": llrp.encode_enable_rospec,
    "START_ROSPEC": llrp.encode_start_rospec,
    "STOP_ROSPEC": llrp.encode_stop_rospec,
    "DISABLE_ROSPEC": llrp.encode_disable_rospec,
    "DELETE_ROSPEC": llrp.encode_delete_rospec,
}


@pytest.mark.parametrize("state", [DISABLED, INACTIVE, ACTIVE])
@pytest.mark.parametrize("request_name", ROSPEC_REQUESTS)
def test_rospec_state_table_all_pairs(request_name: str, state: int) -> None:
    reader, _ = _session()
    _drive_to(reader, state)
    (resp,) = _ask(reader, _ENCODERS[request_name](9, 1))
    assert isinstance(resp, llrp.LlrpResponse)
    assert (resp.type_name, resp.message_id) == (f"{request_name}_RESPONSE", 9)
    new = TRANSITIONS.get((request_name, state))
    if new is None:
        assert resp.status == 300 and resp.status_name == "A_Invalid"
        assert reader.rospecs[1].state == state, "a refused request changes nothing"
    elif new == DELETED:
        assert resp.ok and 1 not in reader.rospecs
    else:
        assert resp.ok and reader.rospecs[1].state == new


@pytest.mark.parametrize("request_name", ROSPEC_REQUESTS)
def test_unknown_rospec_is_refused(request_name: str) -> None:
    reader, _ = _session()
    (resp,) = _ask(reader, _ENCODERS[request_name](4, 77))
    assert isinstance(resp, llrp.LlrpResponse)
    assert resp.status == 300 and "77" in resp.description


def test_delete_zero_removes_every_rospec() -> None:
    reader, _ = _session()
    for rid in (1, 2, 3):
        _ask(reader, llrp.encode_add_rospec(rid, llrp.RoSpec(rid)))
    _ask(reader, llrp.encode_enable_rospec(9, 2))
    (resp,) = _ask(reader, llrp.encode_delete_rospec(10, 0))
    assert resp.ok and reader.rospecs == {}  # type: ignore[attr-defined]


@pytest.mark.parametrize(("spec", "problem"), [
    (llrp.RoSpec(1, current_state=2), "Disabled"),
    (llrp.RoSpec(1, antennas=(5,)), "antenna"),
    (llrp.RoSpec(1, protocol_id=0), "air protocol"),
], ids=["not_disabled", "antenna_out_of_range", "protocol"])
def test_add_rospec_refusals(spec: llrp.RoSpec, problem: str) -> None:
    reader, _ = _session()
    (resp,) = _ask(reader, llrp.encode_add_rospec(1, spec))
    assert isinstance(resp, llrp.LlrpResponse) and resp.status == 300
    assert problem in resp.description and reader.rospecs == {}


def test_add_duplicate_rospec_is_refused() -> None:
    reader, _ = _session()
    assert _ask(reader, llrp.encode_add_rospec(1, llrp.RoSpec(4)))[0].ok  # type: ignore[attr-defined]
    (resp,) = _ask(reader, llrp.encode_add_rospec(2, llrp.RoSpec(4, priority=1)))
    assert resp.status == 300 and reader.rospecs[4].spec.priority == 0  # type: ignore[attr-defined]


def test_unsupported_and_malformed_requests_get_error_messages() -> None:
    reader, _ = _session()
    (resp,) = _ask(reader, llrp.encode_message("GET_READER_CONFIG", 8, bytes(7)))
    assert isinstance(resp, llrp.LlrpResponse)
    assert (resp.type_name, resp.message_id, resp.status) == ("ERROR_MESSAGE", 8, 109)
    (resp,) = _ask(reader, llrp.encode_message("START_ROSPEC", 9, b"\x01"))
    assert isinstance(resp, llrp.LlrpResponse)
    assert (resp.type_name, resp.message_id, resp.status) == ("ERROR_MESSAGE", 9, 100)
    assert [e.kind for e in reader.bad_requests] == ["bad_field"]
    assert _ask(reader, llrp.encode_enable_events_and_reports(10)) == []


def _tags_of(frames: list[bytes]) -> list[TagRead]:
    dec = llrp.Decoder()
    return [m for f in frames for m in dec.feed(f) if isinstance(m, TagRead)]


def test_report_follows_the_content_selector_and_n() -> None:
    reader, clock = _session()
    spec = llrp.RoSpec(1, start_trigger=llrp.START_TRIGGER_IMMEDIATE, report_n=3,
                       report_fields=("antenna_id",))
    _ask(reader, llrp.encode_add_rospec(1, spec))
    _ask(reader, llrp.encode_enable_rospec(2, 1))
    assert reader.rospecs[1].state == ACTIVE  # Immediate start trigger
    frames = reader.tick(clock.now())
    assert len(frames) == math.ceil(len(EPCS) / 3)
    tags = _tags_of(frames)
    assert len(tags) == len(EPCS)
    assert all(t.rssi_dbm is None and t.device_ts_ms is None and t.read_count is None
               for t in tags)
    assert {t.antenna for t in tags} == {1, 2}
    assert reader.tick(clock.now()) == [], "one round per interval"


def test_only_connected_antennas_read() -> None:
    reader, clock = _session(connected_antennas=frozenset({2}))
    _ask(reader, llrp.encode_add_rospec(1, llrp.RoSpec(1, start_trigger=1, report_n=0)))
    _ask(reader, llrp.encode_enable_rospec(2, 1))
    (frame,) = reader.tick(clock.now())
    tags = _tags_of([frame])
    assert {t.antenna for t in tags} == {2}
    assert sorted(t.epc for t in tags) == sorted(e.hex().upper() for e in EPCS[1::2])


def test_duration_stop_trigger_ends_the_rospec() -> None:
    reader, clock = _session()
    spec = llrp.RoSpec(1, start_trigger=1, stop_trigger=1, stop_duration_ms=2500)
    _ask(reader, llrp.encode_add_rospec(1, spec))
    _ask(reader, llrp.encode_enable_rospec(2, 1))
    assert reader.tick(clock.now())
    clock.advance(2.0)
    assert reader.tick(clock.now())
    clock.advance(0.5)
    assert reader.tick(clock.now()) == []
    assert reader.rospecs[1].state == INACTIVE


def test_clock_jump_is_capped() -> None:
    reader, clock = _session()
    _ask(reader, llrp.encode_add_rospec(1, llrp.RoSpec(1, start_trigger=1, report_n=0)))
    _ask(reader, llrp.encode_enable_rospec(2, 1))
    reader.tick(clock.now())
    clock.advance(100.0)
    frames = reader.tick(clock.now())
    assert len(frames) == MAX_ROUNDS_PER_TICK
    assert reader.skipped_rounds == 100 - MAX_ROUNDS_PER_TICK  # due: t0+1 .. t0+100
    stamps = sorted({t.device_ts_ms or 0 for t in _tags_of(frames)})
    assert stamps == [round((clock.now() - 100 + 1 + k) * 1000)
                      for k in range(MAX_ROUNDS_PER_TICK)]
    clock.advance(reader.report_interval_s)
    assert len(reader.tick(clock.now())) == 1


def test_closed_session_is_silent() -> None:
    reader, clock = _session(keepalive_interval_s=1.0)
    _ask(reader, llrp.encode_add_rospec(1, llrp.RoSpec(1, start_trigger=1)))
    _ask(reader, llrp.encode_enable_rospec(2, 1))
    (resp,) = _ask(reader, llrp.encode_close_connection(3))
    assert isinstance(resp, llrp.LlrpResponse) and resp.ok
    clock.advance(5.0)
    assert reader.tick(clock.now()) == []
    # the ROSpec survives the connection, as on a real reader
    assert reader.rospecs[1].state == ACTIVE


def test_keepalives_follow_the_clock() -> None:
    reader, clock = _session(keepalive_interval_s=10.0)
    assert reader.tick(clock.now()) == []
    clock.advance(10.0)
    (frame,) = reader.tick(clock.now())
    assert llrp.Decoder().feed(frame) == [llrp.Keepalive(2)]  # 1 was the connection event
    assert reader.tick(clock.now()) == []


def test_same_seed_same_output() -> None:
    def run(seed: int) -> list[bytes]:
        clock = ManualClock()
        reader = LlrpReader(tags=_population(0.5), seed=seed, clock=clock)
        frames = reader.on_connect()
        frames += reader.handle(llrp.encode_add_rospec(1, llrp.RoSpec(1, start_trigger=1))
                                + llrp.encode_enable_rospec(2, 1))
        for _ in range(3):
            frames += reader.tick(clock.now())
            clock.advance(1.0)
        return frames

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_demo_and_bad_arguments() -> None:
    reader = LlrpReader.demo(seed=3, clock=ManualClock())
    assert isinstance(reader, LlrpReader) and reader.KIND == "llrp"
    assert len(reader.tags) == 50 and reader.keepalive_interval_s == 10.0
    with pytest.raises(ValueError):
        LlrpReader(report_interval_s=0)
    with pytest.raises(ValueError):
        LlrpReader(keepalive_interval_s=-1)


def test_corrupt_makes_a_message_the_client_rejects() -> None:
    frame = llrp.encode_keepalive(5)
    bad = LlrpReader().corrupt(frame)
    assert len(bad) == len(frame)
    (err,) = llrp.Decoder().feed(bad)
    assert isinstance(err, FrameError) and err.kind == "bad_field" and err.raw == bad
