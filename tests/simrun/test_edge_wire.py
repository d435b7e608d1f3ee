"""SiteEdge: observations through the real device protocols, edge aggregation and the real
outbox, out as signed envelopes (pledgewatch.simrun.edge / .wire)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_sim.world.observations import (
    AnimalWeighing,
    DeviceState,
    FeedDelivery,
    GatewayState,
    Observation,
    PositionFix,
    TagRead,
    TruckWeighing,
)
from pledgewatch.simrun import wire
from pledgewatch.simrun.edge import DeviceSpec, SiteEdge
from protocols.uplink import Reading, UplinkError
from uplink.envelope import decode_envelope, verify_envelope

T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC, a whole minute
GW = "gw-ranch-1"
SITE = "ranch-1"
COW = "300833B2DDD9014000000001"
MOTION = "E7000000000000ABCD00"  # + 4 hex digits of motion counter
TRUCK = "E28011606000020000001234"


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def make(tmp_path: Path, key: Ed25519PrivateKey, devices: Sequence[DeviceSpec],
         **kw: object) -> SiteEdge:
    return SiteEdge(site=SITE, gateway_id=GW, devices=devices, data_dir=tmp_path / "gw",
                    private_key=key, start_ms=T0, **kw)  # type: ignore[arg-type]


def drain(edge: SiteEdge, key: Ed25519PrivateKey, now_ms: int) -> list[Reading]:
    """Upload everything as the gateway would: verify, decode, ack, until nothing is left."""
    pub = key.public_key()
    out: list[Reading] = []
    while envs := edge.pending_envelopes(now_ms, 10):
        assert len(envs) == 1
        seq, env = envs[0]
        header = verify_envelope(env, lambda gw: pub if gw == GW else None)
        batch = decode_envelope(env, lambda gw: pub if gw == GW else None)
        assert header.seq == batch.seq == seq and batch.gateway_id == GW
        out += batch.readings
        edge.ack(seq)
    return out


def of(readings: list[Reading], kind: str, device: str | None = None) -> list[Reading]:
    return [r for r in readings if r.kind == kind and (device is None or r.device_id == device)]


def feed_all(edge: SiteEdge, observations: Sequence[Observation]) -> None:
    for obs in observations:
        edge.feed(obs)


def tag(t_ms: int, epc: str = COW, device: str = "rd1", antenna: int = 1,
        rssi: int = -60) -> TagRead:
    return TagRead(t_ms, SITE, device, epc, antenna, rssi)


# -- RFID ------------------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", ["r2000", "thingmagic", "chafon"])
def test_a_tag_read_every_5_s_for_2_min_gives_one_sighting_per_window(
        tmp_path: Path, key: Ed25519PrivateKey, protocol: str) -> None:
    edge = make(tmp_path, key, [DeviceSpec("rd1", "reader", protocol)])
    feed_all(edge, [tag(T0 + 1000 + 5000 * i, antenna=2, rssi=-70 + i % 7)
                    for i in range(24)])
    got = drain(edge, key, T0 + 180_000)
    online = of(got, "device_online")
    assert [(r.device_id, r.ts_ms, r.data["driver"]) for r in online] == [("rd1", T0, protocol)]
    sightings = of(got, "tag_sighting")
    assert [(s.data["epc"], s.data["antenna"], s.data["count"], s.data["first_ms"],
             s.data["last_ms"]) for s in sightings] == [
        (COW, 2, 12, T0 + 1000, T0 + 56_000), (COW, 2, 12, T0 + 61_000, T0 + 116_000)]
    # Chafon sends raw RSSI bytes the edge does not convert
    assert sightings[0].data["rssi_max_dbm"] == (None if protocol == "chafon" else -64.0)
    c = edge.counters
    assert c["frames_encoded"] == 24 + (protocol == "thingmagic")  # + the stream start ack
    # (a Chafon inventory reply is a tag read and the round's status: two messages)
    assert c["messages_decoded"] == c["frames_encoded"] * (2 if protocol == "chafon" else 1)
    assert c["decode_errors"] == 0
    assert c["readings_tag_sighting"] == 2
    edge.close()


def test_motion_tag_sightings_carry_the_identity_epc_and_the_motion_delta(
        tmp_path: Path, key: Ed25519PrivateKey) -> None:
    edge = make(tmp_path, key, [DeviceSpec("rd1", "reader", "r2000")])
    counters = [65530, 65533, 2, 65531, 10]  # wraps; 65531 after 2 is a stale late read
    feed_all(edge, [tag(T0 + 2000 * i, epc=f"{MOTION}{n:04X}") for i, n in enumerate(counters)]
             + [tag(T0 + 61_000, epc=f"{MOTION}{30:04X}")])
    sightings = of(drain(edge, key, T0 + 130_000), "tag_sighting")
    assert [(s.data["epc"], s.data["count"], s.data["motion"], s.data["motion_delta"])
            for s in sightings] == [(f"{MOTION}0000", 5, 10, 16), (f"{MOTION}0000", 1, 30, 0)]
    edge.close()


def test_a_late_read_into_a_closed_window_is_sent_not_lost(tmp_path: Path,
                                                         key: Ed25519PrivateKey) -> None:
    edge = make(tmp_path, key, [DeviceSpec("rd1", "reader", "r2000")])
    edge.feed(tag(T0 + 1000))
    edge.advance(T0 + 61_000)  # window [0 s, 60 s) is flushed
    edge.feed(tag(T0 + 2000))  # arrives late
    sightings = of(drain(edge, key, T0 + 62_000), "tag_sighting")
    assert [(s.data["first_ms"], s.data["count"]) for s in sightings] == [
        (T0 + 1000, 1), (T0 + 2000, 1)]
    assert edge.counters["out_of_order"] == 1
    edge.close()


def test_chunked_serial_reads_give_the_same_readings_as_whole_frames(
        tmp_path: Path, key: Ed25519PrivateKey) -> None:
    devices = [DeviceSpec("rd1", "reader", "r2000"), DeviceSpec("wb", "weighbridge", "toledo"),
               DeviceSpec("mx", "feeder", "digistar"), DeviceSpec("gps", "gps", "nmea")]
    script: list[Observation] = [
        tag(T0 + 1000), tag(T0 + 4000, epc=f"{MOTION}0005"),
        TruckWeighing(T0 + 100_000, SITE, "wb", "TRK-7", "in", 31_250.0),
        FeedDelivery(T0 + 200_000, SITE, "mx", "P3", 640.0),
        PositionFix(T0 + 300_000, SITE, "gps", -23.55052, -46.633308),
        TruckWeighing(T0 + 400_000, SITE, "wb", "TRK-7", "out", 11_200.0)]
    results = []
    for read_size in (None, 3):
        edge = make(tmp_path / str(read_size), key, devices, read_size=read_size)
        feed_all(edge, script)
        results.append([(r.kind, r.device_id, r.ts_ms, r.data)
                        for r in drain(edge, key, T0 + 600_000)])
        assert edge.counters["decode_errors"] == 0
        edge.close()
    assert results[0] == results[1]
    assert {k for k, *_ in results[0]} >= {"tag_sighting", "weigh_ticket", "feed_event",
                                           "position"}


# -- weighbridge -----------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", ["xk3190", "toledo"])
def test_a_truck_in_and_out_gives_one_ticket_named_by_its_gate_read(
        tmp_path: Path, key: Ed25519PrivateKey, protocol: str) -> None:
    edge = make(tmp_path, key, [DeviceSpec("gate", "truck_reader", "r2000", place="gate"),
                                DeviceSpec("wb", "weighbridge", protocol, place="gate")])
    edge.feed(TruckWeighing(T0 + 600_000, SITE, "wb", TRUCK, "in", 38_740.0))
    edge.feed(TruckWeighing(T0 + 2_400_000, SITE, "wb", TRUCK, "out", 14_020.0))
    got = drain(edge, key, T0 + 3_000_000)
    tickets = of(got, "weigh_ticket")
    assert len(tickets) == 1
    t = tickets[0]
    assert t.data == {"gross_kg": 38_740.0, "tare_kg": 14_020.0, "net_kg": 24_720.0,
                      "truck_id": TRUCK, "in_ms": T0 + 600_000, "out_ms": T0 + 2_400_000,
                      "direction": "inbound"}
    assert t.ts_ms == T0 + 2_400_000
    weighs = of(got, "weigh_event")
    assert [(w.ts_ms, w.data["truck_id"], w.data["event"]) for w in weighs] == [
        (T0 + 600_000, TRUCK, "weigh"), (T0 + 2_400_000, TRUCK, "weigh")]
    gate = of(got, "tag_sighting", "gate")
    assert [s.data["epc"] for s in gate] == [TRUCK, TRUCK]  # what named the truck
    edge.close()


def test_a_truck_without_an_rfid_tag_is_named_by_the_plate_camera(
        tmp_path: Path, key: Ed25519PrivateKey) -> None:
    edge = make(tmp_path, key, [DeviceSpec("wb", "weighbridge", "xk3190")])
    edge.feed(TruckWeighing(T0 + 60_000, SITE, "wb", "TRK-42", "in", 12_345.4))  # empty
    edge.feed(TruckWeighing(T0 + 900_000, SITE, "wb", "TRK-42", "out", 40_000.0))
    (ticket,) = of(drain(edge, key, T0 + 1_000_000), "weigh_ticket")
    # the indicator shows whole kilograms
    assert (ticket.data["truck_id"], ticket.data["gross_kg"], ticket.data["tare_kg"],
            ticket.data["net_kg"], ticket.data["direction"]) == (
        "TRK-42", 40_000.0, 12_345.0, 27_655.0, "outbound")
    edge.close()


def test_interleaved_trucks_pair_with_their_own_weighs(tmp_path: Path,
                                                       key: Ed25519PrivateKey) -> None:
    other = "E28011606000020000005678"
    edge = make(tmp_path, key, [DeviceSpec("gate", "truck_reader", "r2000"),
                                DeviceSpec("wb", "weighbridge", "xk3190")])
    feed_all(edge, [TruckWeighing(T0 + 60_000, SITE, "wb", TRUCK, "in", 30_000.0),
                    TruckWeighing(T0 + 180_000, SITE, "wb", other, "in", 9_000.0),
                    TruckWeighing(T0 + 300_000, SITE, "wb", TRUCK, "out", 10_000.0),
                    TruckWeighing(T0 + 420_000, SITE, "wb", other, "out", 25_000.0)])
    tickets = of(drain(edge, key, T0 + 500_000), "weigh_ticket")
    assert sorted((t.data["truck_id"], t.data["net_kg"], t.data["direction"])
                  for t in tickets) == [(TRUCK, 20_000.0, "inbound"),
                                        (other, 16_000.0, "outbound")]
    edge.close()


# -- animal scale ----------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", ["xk3190", "toledo"])
def test_an_animal_weighing_gives_a_weigh_event_with_its_epc(
        tmp_path: Path, key: Ed25519PrivateKey, protocol: str) -> None:
    edge = make(tmp_path, key, [DeviceSpec("sc", "animal_scale", protocol)])
    day = 86_400_000
    feed_all(edge, [AnimalWeighing(T0 + 3_600_000, SITE, "sc", f"{MOTION}01A2", 412.34),
                    AnimalWeighing(T0 + 3_610_000, SITE, "sc", COW, 388.0),
                    AnimalWeighing(T0 + 3_620_000, SITE, "sc", COW, 0.0),  # a 0 kg read
                    AnimalWeighing(T0 + day, SITE, "sc", f"{MOTION}01B0", 413.1)])
    got = drain(edge, key, T0 + day + 120_000)
    weighs = of(got, "weigh_event")
    assert [(w.ts_ms, w.data["epc"], w.data["weight_kg"], w.data["event"]) for w in weighs] == [
        (T0 + 3_600_000, f"{MOTION}0000", 412.3, "weigh"),
        (T0 + 3_610_000, COW, 388.0, "weigh"),
        (T0 + day, f"{MOTION}0000", 413.1, "weigh")]
    assert all("truck_id" not in w.data for w in weighs)
    assert not of(got, "weigh_ticket")  # two weighs of one animal are not a ticket
    # the scale's reader saw the animals too
    assert {s.data["epc"] for s in of(got, "tag_sighting", "sc")} == {f"{MOTION}0000", COW}
    assert edge.counters["animal_weighs_unidentified"] == 0
    edge.close()


# -- feeders ---------------------------------------------------------------------------------
def test_digistar_deliveries_give_feed_events_with_pen_and_kg(
        tmp_path: Path, key: Ed25519PrivateKey) -> None:
    edge = make(tmp_path, key, [DeviceSpec("mx", "feeder", "digistar")])
    feed_all(edge, [FeedDelivery(T0 + 600_000, SITE, "mx", "P1", 2_812.4),
                    FeedDelivery(T0 + 900_000, SITE, "mx", "P2", 2_900.7),
                    FeedDelivery(T0 + 1_200_000, SITE, "mx", "P3", 1_000.0)])  # loads again
    events = of(drain(edge, key, T0 + 1_300_000), "feed_event")
    unloads = [e for e in events if e.data["event"] == "unload"]
    assert [(e.ts_ms, e.data["pen"]) for e in unloads] == [
        (T0 + 600_000, "P1"), (T0 + 900_000, "P2"), (T0 + 1_200_000, "P3")]
    for e, kg in zip(unloads, (2_812.4, 2_900.7, 1_000.0), strict=True):
        assert abs(e.data["kg"] - kg) <= 1.0  # the display shows whole kilograms
    loads = [e for e in events if e.data["event"] == "load"]
    assert len(loads) == 2 and all(e.data["pen"] is None for e in loads)
    edge.close()


def test_modbus_feeder_deliveries_give_feed_events_with_pen_and_kg(
        tmp_path: Path, key: Ed25519PrivateKey) -> None:
    edge = make(tmp_path, key, [DeviceSpec("fd", "feeder", "modbus")])
    feed_all(edge, [FeedDelivery(T0 + 60_000, SITE, "fd", "P7", 512.6),
                    FeedDelivery(T0 + 120_000, SITE, "fd", "P8", 80.2),
                    FeedDelivery(T0 + 180_000, SITE, "fd", "P7", 300.9)])
    events = of(drain(edge, key, T0 + 300_000), "feed_event")
    assert [(e.ts_ms, e.data["event"], e.data["pen"]) for e in events] == [
        (T0 + 60_000, "deliver", "P7"), (T0 + 120_000, "deliver", "P8"),
        (T0 + 180_000, "deliver", "P7")]
    for e, kg in zip(events, (512.6, 80.2, 300.9), strict=True):
        assert abs(e.data["kg"] - kg) <= 1.0  # 1 kg per counter step
    edge.close()


# -- GPS -------------------------------------------------------------------------------------
def test_gps_fixes_become_thinned_positions(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    edge = make(tmp_path, key, [DeviceSpec("gps", "gps", "nmea")])
    fixes = [(0, -23.55, -46.63), (10_000, -23.5491, -46.63),  # ~100 m north: kept
             (20_000, -23.54911, -46.63),  # ~1 m: thinned
             (90_000, -23.54911, -46.63)]  # 70 s after the last kept: kept
    feed_all(edge, [PositionFix(T0 + dt, SITE, "gps", lat, lon) for dt, lat, lon in fixes])
    pos = of(drain(edge, key, T0 + 100_000), "position")
    assert [p.ts_ms - T0 for p in pos] == [0, 10_000, 90_000]
    for p, (_, lat, lon) in zip(pos, [fixes[0], fixes[1], fixes[3]], strict=True):
        # NMEA carries 1/10000 of a minute (about 0.2 m)
        assert p.data["lat"] == pytest.approx(lat, abs=2e-6)
        assert p.data["lon"] == pytest.approx(lon, abs=2e-6)
    edge.close()


# -- envelopes -------------------------------------------------------------------------------
def test_envelopes_are_signed_resent_unchanged_until_acked(
        tmp_path: Path, key: Ed25519PrivateKey) -> None:
    edge = make(tmp_path, key, [DeviceSpec("rd1", "reader", "r2000")], batch_max_readings=3,
                heartbeat_ms=None)
    feed_all(edge, [tag(T0 + 1000, epc=f"3008{i:020X}") for i in range(5)])
    edge.advance(T0 + 60_000)
    first = edge.pending_envelopes(T0 + 60_000, 5)
    assert first == edge.pending_envelopes(T0 + 70_000, 5)  # same bytes until acked
    seq, env = first[0]
    with pytest.raises(UplinkError) as err:
        verify_envelope(env, lambda gw: Ed25519PrivateKey.generate().public_key())
    assert err.value.reason == "bad_signature"
    assert len(decode_envelope(env, lambda gw: key.public_key()).readings) == 3
    edge.ack(seq)
    (seq2, env2), = edge.pending_envelopes(T0 + 70_000, 5)
    assert seq2 == seq + 1
    assert len(decode_envelope(env2, lambda gw: key.public_key()).readings) == 3
    edge.ack(seq2)
    assert edge.pending_envelopes(T0 + 80_000, 5) == []
    assert edge.outbox is not None and edge.outbox.stats().depth == 0
    assert edge.counters["envelopes_built"] == edge.counters["envelopes_acked"] == 2
    edge.close()


def test_pending_envelopes_wait_for_age_or_a_full_batch(tmp_path: Path,
                                                        key: Ed25519PrivateKey) -> None:
    edge = make(tmp_path, key, [DeviceSpec("gps", "gps", "nmea")])
    assert len(edge.pending_envelopes(T0, 1)) == 1  # device_online: priority goes at once
    edge.ack(edge.pending_envelopes(T0, 1)[0][0])
    edge.feed(PositionFix(T0 + 1000, SITE, "gps", -23.55, -46.63))
    assert edge.pending_envelopes(T0 + 3000, 1) == []  # 1 bulk reading, 1 s old
    assert len(edge.pending_envelopes(T0 + 7000, 1)) == 1  # older than batch_max_age_ms
    edge.close()


def test_an_idle_gateway_stores_a_heartbeat_every_minute(tmp_path: Path,
                                                        key: Ed25519PrivateKey) -> None:
    edge = make(tmp_path, key, [DeviceSpec("rd1", "reader", "r2000")])
    edge.feed(tag(T0 + 1000))
    edge.feed(tag(T0 + 400_000))  # its sighting is stored when its window ends, at 420 s
    got = drain(edge, key, T0 + 530_000)
    beats = of(got, "heartbeat", f"gateway:{GW}")
    # a minute after the last store, on the loop's 15 s grid; readings stored at the moment
    # of a check (the sightings at 60 s and 420 s) count as stored
    assert [b.ts_ms - T0 for b in beats] == [120_000, 180_000, 240_000, 300_000, 360_000,
                                             480_000]
    assert all(b.recv_ms == b.ts_ms and b.data["outbox_readings"] >= 0 for b in beats)
    edge.close()


# -- crash -----------------------------------------------------------------------------------
def test_a_crash_loses_only_open_aggregation_and_duplicates_nothing(
        tmp_path: Path, key: Ed25519PrivateKey) -> None:
    edge = make(tmp_path, key, [DeviceSpec("rd1", "reader", "r2000"),
                                DeviceSpec("gps", "gps", "nmea")])
    feed_all(edge, [tag(T0 + 1000 + 5000 * i) for i in range(12)])  # window 1: closes at 60 s
    edge.feed(PositionFix(T0 + 62_000, SITE, "gps", -23.55, -46.63))
    edge.feed(tag(T0 + 65_000))  # window 2: still open at the crash
    edge.advance(T0 + 66_000)
    (seq, env), = edge.pending_envelopes(T0 + 66_000, 1)  # built, not acked yet
    edge.feed(tag(T0 + 70_000))
    edge.feed(PositionFix(T0 + 75_000, SITE, "gps", -23.56, -46.63))  # emitted at 76 s
    edge.crash(T0 + 80_000)
    edge.feed(tag(T0 + 85_000))  # nobody reads the reader
    edge.feed(PositionFix(T0 + 86_000, SITE, "gps", -23.57, -46.63))
    assert edge.pending_envelopes(T0 + 90_000, 1) == []
    assert edge.counters["dropped_while_crashed"] == 2
    edge.restart(T0 + 95_000)
    assert edge.pending_envelopes(T0 + 95_000, 1) == [(seq, env)]  # resent byte for byte
    edge.feed(tag(T0 + 100_000))
    got = drain(edge, key, T0 + 200_000)  # starts with the resent batch
    sightings = of(got, "tag_sighting")
    assert [(s.data["first_ms"], s.data["count"]) for s in sightings] == [
        (T0 + 1000, 12), (T0 + 100_000, 1)]  # 65 s and 70 s were open at the crash
    assert [p.ts_ms for p in of(got, "position")] == [T0 + 62_000, T0 + 75_000]
    assert [(r.device_id, r.ts_ms) for r in of(got, "device_online")] == [
        ("rd1", T0), ("gps", T0), ("rd1", T0 + 95_000), ("gps", T0 + 95_000)]
    assert len({(r.kind, r.device_id, r.ts_ms) for r in got}) == len(got)  # no duplicate
    assert edge.counters["crashes"] == edge.counters["restarts"] == 1
    edge.close()


def test_gateway_state_observations_crash_and_restart_the_gateway(
        tmp_path: Path, key: Ed25519PrivateKey) -> None:
    edge = make(tmp_path, key, [DeviceSpec("rd1", "reader", "r2000")])
    feed_all(edge, [GatewayState(T0 + 10_000, SITE, GW, "network", False),
                    tag(T0 + 20_000),
                    GatewayState(T0 + 30_000, SITE, GW, "crash", False),
                    tag(T0 + 40_000),
                    GatewayState(T0 + 50_000, SITE, GW, "crash", True),
                    tag(T0 + 130_000)])
    got = drain(edge, key, T0 + 200_000)
    assert [s.data["first_ms"] for s in of(got, "tag_sighting")] == [T0 + 130_000]
    assert edge.counters["dropped_while_crashed"] == 1
    assert edge.counters["ignored_network_state"] == 1
    edge.close()


# -- device availability ---------------------------------------------------------------------
def test_device_offline_after_the_silence_timeout_and_online_when_back(
        tmp_path: Path, key: Ed25519PrivateKey) -> None:
    edge = make(tmp_path, key, [DeviceSpec("rd1", "reader", "r2000")])
    edge.feed(tag(T0 + 5000))
    edge.set_device_online("rd1", False, T0 + 10_000, "reader_offline incident")
    edge.feed(tag(T0 + 15_000))  # the reader is not talking
    edge.advance(T0 + 39_999)
    assert not of(drain(edge, key, T0 + 39_999), "device_offline")
    edge.feed(DeviceState(T0 + 100_000, SITE, "rd1", True))  # the observation does the same
    edge.feed(tag(T0 + 101_000))
    # a blip shorter than the silence timeout goes unnoticed
    edge.set_device_online("rd1", False, T0 + 200_000)
    edge.set_device_online("rd1", True, T0 + 210_000)
    got = drain(edge, key, T0 + 300_000)
    assert [(r.kind, r.ts_ms, r.data) for r in got if r.kind.startswith("device_")] == [
        ("device_offline", T0 + 40_000, {"reason": "no good frame for 30.0 s"}),
        ("device_online", T0 + 100_000, {"driver": "r2000"})]
    # the final flush at the timeout sent the open sighting; 15 s was never read
    assert [(s.data["first_ms"], s.data["count"], s.recv_ms) for s in
            of(got, "tag_sighting")] == [(T0 + 5000, 1, T0 + 5000), (T0 + 101_000, 1,
                                                                      T0 + 101_000)]
    assert edge.counters["dropped_device_offline"] == 1
    edge.close()


def test_a_device_down_across_a_restart_is_reported_offline_again(
        tmp_path: Path, key: Ed25519PrivateKey) -> None:
    edge = make(tmp_path, key, [DeviceSpec("wb", "weighbridge", "toledo")])
    edge.set_device_online("wb", False, T0 + 1000)
    edge.crash(T0 + 2000)
    edge.restart(T0 + 10_000)
    got = drain(edge, key, T0 + 60_000)
    assert [(r.kind, r.ts_ms) for r in got] == [("device_online", T0),
                                               ("device_offline", T0 + 40_000)]
    edge.close()


# -- bad input -------------------------------------------------------------------------------
def test_bad_observations_are_counted_not_raised(tmp_path: Path,
                                                 key: Ed25519PrivateKey) -> None:
    edge = make(tmp_path, key, [DeviceSpec("rd1", "reader", "r2000"),
                                DeviceSpec("gps", "gps", "nmea"),
                                DeviceSpec("wb", "weighbridge", "xk3190"),
                                DeviceSpec("sc", "animal_scale", "toledo")])
    feed_all(edge, [tag(T0 + 1000, epc="ABC"),  # not whole words
                    tag(T0 + 1000, antenna=9),  # an R2000 has 4 ports
                    tag(T0 + 1000, device="nobody"),
                    AnimalWeighing(T0 + 1000, SITE, "rd1", COW, 400.0),  # a reader
                    PositionFix(T0 + 2000, SITE, "gps", 95.0, 10.0),
                    TruckWeighing(T0 + 2000, SITE, "wb", TRUCK, "in", 5e6),  # > 6 digits
                    AnimalWeighing(T0 + 2000, SITE, "sc", COW, float("inf")),
                    tag(T0 + 500)])  # late, but taken
    edge.set_device_online("nobody", False, T0 + 3000)
    c = edge.counters
    assert (c["encode_errors"], c["unknown_device"], c["wrong_role"], c["out_of_order"]) == (
        5, 2, 1, 1)
    assert [s.data["first_ms"] for s in of(drain(edge, key, T0 + 70_000), "tag_sighting")] == [
        T0 + 500]
    edge.close()


@pytest.mark.parametrize(("spec", "message"), [
    (DeviceSpec("x", "camera", "r2000"), "unknown role"),
    (DeviceSpec("x", "weighbridge", "nmea"), "speaks xk3190 or toledo"),
])
def test_a_device_that_cannot_be_simulated_is_refused(tmp_path: Path, key: Ed25519PrivateKey,
                                                      spec: DeviceSpec, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(tmp_path, key, [spec])
    with pytest.raises(ValueError, match="twice"):
        make(tmp_path, key, [DeviceSpec("a", "gps", "nmea"), DeviceSpec("a", "gps", "nmea")])


def test_truck_readers_serve_the_weighbridges_of_their_place(
        tmp_path: Path, key: Ed25519PrivateKey) -> None:
    edge = make(tmp_path, key, [DeviceSpec("g-north", "truck_reader", "r2000", place="north"),
                                DeviceSpec("g-south", "truck_reader", "r2000", place="south"),
                                DeviceSpec("wb-n", "weighbridge", "xk3190", place="north"),
                                DeviceSpec("wb-s", "weighbridge", "xk3190", place="south")])
    feed_all(edge, [TruckWeighing(T0 + 60_000, SITE, "wb-s", TRUCK, "in", 30_000.0),
                    TruckWeighing(T0 + 600_000, SITE, "wb-s", TRUCK, "out", 10_000.0)])
    got = drain(edge, key, T0 + 700_000)
    assert {s.device_id for s in of(got, "tag_sighting")} == {"g-south"}
    assert [t.device_id for t in of(got, "weigh_ticket")] == ["wb-s"]
    edge.close()


def test_wire_helpers() -> None:
    assert wire.is_epc_hex(TRUCK) and not wire.is_epc_hex("TRK-42")
    assert not wire.is_epc_hex("ABCDEF")  # not whole 16-bit words
    enc = wire.TagEncoder("r2000")
    assert enc.encode(COW, 1, -60, 0) is enc.encode(COW, 1, -60, 99)  # remembered
    with pytest.raises(ValueError):
        wire.ScaleDisplay("digistar")
