"""NMEA 0183 codec: the standard codec test set plus the shared captures."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols import nmea
from protocols._crc import xor8
from protocols.messages import Position
from tests.codec_harness import (
    capture_lines,
    check_bytewise_equals_oneshot,
    check_garbage_between,
    check_never_raises,
    check_prefixes_incomplete,
    check_roundtrip,
    errors,
    feed_all,
    messages,
)

NO_FIX_GGA = b"$GPGGA,201716.684,,,,,0,00,,,M,0.0,M,,0000*5F\r\n"

# (id, sentence, expected message)
CATALOGUE = [
    ("gga_fix", nmea.encode_gga(time_utc="18:43:53.07", lat=-19.5, lon=24.25, satellites=4,
                                hdop=2.6, altitude_m=100.0),
     Position(lat=-19.5, lon=24.25, fix=True, sentence="GGA", talker="GP",
              time_utc="18:43:53.07", altitude_m=100.0, satellites=4, hdop=2.6, quality=1)),
    ("gga_rtk_gn_time_object",
     nmea.encode_gga(time_utc=dt.time(6, 5, 4, 120_000), lat=0.0, lon=-0.5, quality=4,
                     talker="GN", satellites=12, hdop=None, altitude_m=-3.5),
     Position(lat=0.0, lon=-0.5, fix=True, sentence="GGA", talker="GN", time_utc="06:05:04.12",
              altitude_m=-3.5, satellites=12, hdop=None, quality=4)),
    ("gga_no_fix", nmea.encode_gga(time_utc="20:17:16.684", lat=None, lon=None, quality=0,
                                   satellites=0, hdop=None, altitude_m=None),
     Position(lat=None, lon=None, fix=False, sentence="GGA", talker="GP",
              time_utc="20:17:16.684", satellites=0, quality=0)),
    ("rmc_valid", nmea.encode_rmc(time_utc="22:54:46", date=dt.date(2024, 2, 29), lat=49.25,
                                  lon=-123.125, speed_knots=0.5, course_deg=54.7),
     Position(lat=49.25, lon=-123.125, fix=True, sentence="RMC", talker="GP",
              time_utc="22:54:46", date="2024-02-29", speed_knots=0.5, course_deg=54.7)),
    ("rmc_void_1990s_no_mode", nmea.encode_rmc(time_utc="00:00:00", date="1994-11-19",
                                               lat=None, lon=None, valid=False,
                                               speed_knots=None, mode=None),
     Position(lat=None, lon=None, fix=False, sentence="RMC", talker="GP", time_utc="00:00:00",
              date="1994-11-19")),
    ("gll_valid", nmea.encode_gll(lat=-33.75, lon=151.0, time_utc="12:00:01.5"),
     Position(lat=-33.75, lon=151.0, fix=True, sentence="GLL", talker="GP",
              time_utc="12:00:01.5")),
    ("gll_void", nmea.encode_gll(lat=None, lon=None, time_utc=None, valid=False, talker="GL"),
     Position(lat=None, lon=None, fix=False, sentence="GLL", talker="GL")),
    ("gll_pre_2_0_no_status", nmea.encode_sentence("GP", "GLL", ["4916.45", "N", "12311.12",
                                                                 "W"]),
     Position(lat=49.27416667, lon=-123.18533333, fix=True, sentence="GLL", talker="GP")),
    ("vtg", nmea.encode_vtg(course_true_deg=108.5, speed_knots=10.0, course_magnetic_deg=100.0),
     nmea.Velocity("GP", 108.5, 100.0, 10.0, 18.52, "A", True)),
    ("vtg_not_valid", nmea.encode_vtg(course_true_deg=None, speed_knots=None, mode="N"),
     nmea.Velocity("GP", None, None, None, None, "N", False)),
    ("vtg_dead_reckoning", nmea.encode_vtg(course_true_deg=1.0, speed_knots=0.0, mode="E"),
     nmea.Velocity("GP", 1.0, None, 0.0, 0.0, "E", False)),
    ("vtg_nmea_1_5", nmea.encode_sentence("GP", "VTG", ["054.7", "005.5", "000.0", "000.0"]),
     nmea.Velocity("GP", 54.7, 5.5, 0.0, 0.0)),
    ("gsa_other", nmea.encode_sentence("GN", "GSA", ["A", "3", "02", "", "1.6"]),
     nmea.OtherSentence("GN", "GSA", ("A", "3", "02", "", "1.6"))),
    ("gsv_beidou", nmea.encode_sentence("BD", "GSV", ["1", "1", "01", "12", "28", "063", "33"]),
     nmea.OtherSentence("BD", "GSV", ("1", "1", "01", "12", "28", "063", "33"))),
    ("proprietary", nmea.encode_sentence("P", "UBX", ["00", "", None]),
     nmea.OtherSentence("P", "UBX", ("00", "", ""))),
    ("ais_encapsulated", nmea.encode_sentence("AI", "VDM", ["1", "1", "", "B", "15M67F", "0"],
                                              encapsulated=True),
     nmea.OtherSentence("AI", "VDM", ("1", "1", "", "B", "15M67F", "0"), encapsulated=True)),
    ("encapsulated_gga_is_not_a_position", nmea.encode_sentence("GP", "GGA", ["1"],
                                                                encapsulated=True),
     nmea.OtherSentence("GP", "GGA", ("1",), encapsulated=True)),
]


@pytest.mark.parametrize(("frame", "expected"), [c[1:] for c in CATALOGUE],
                         ids=[c[0] for c in CATALOGUE])
def test_roundtrip(frame: bytes, expected: object) -> None:
    check_roundtrip(nmea.Decoder, frame, expected)  # type: ignore[arg-type]
    check_prefixes_incomplete(nmea.Decoder, frame)
    # the device role reads the same grammar
    check_roundtrip(lambda: nmea.Decoder("device"), frame, expected)  # type: ignore[arg-type]


def test_bare_lf_line_end_is_accepted() -> None:
    frame = CATALOGUE[0][1]
    assert feed_all(nmea.Decoder, frame.replace(b"\r\n", b"\n")) == [CATALOGUE[0][2]]


def test_bytewise_equals_oneshot() -> None:
    stream = (b"junk\r\n" + b"".join(c[1] for c in CATALOGUE) + b"$GPGGA,1,2*00\r\n"
              + b"$GPRMC,12" + NO_FIX_GGA + b"x" * 130 + b"$" + b"y" * 130 + CATALOGUE[0][1])
    check_bytewise_equals_oneshot(nmea.Decoder, stream)


GOOD = CATALOGUE[0][1]
_LONG_FIELD = "1" * 100

MALFORMED = [
    ("bad_checksum", b"$GPGGA,184353.07,1929.045,S,02410.506,E,1,04,2.6,100.00,M,-33.9,M,,0000"
                     b"*00\r\n", "bad_checksum"),
    ("missing_checksum", b"$GPGLL,4916.45,N,12311.12,W,225444,A,\r\n", "bad_checksum"),
    ("checksum_not_hex", b"$GPGSA,A*ZZ\r\n", "bad_checksum"),
    ("checksum_one_digit", b"$GPGSA,A*1\r\n", "bad_checksum"),
    ("non_ascii", "$GPGSA,Ä*00\r\n".encode(), "bad_text"),
    ("control_char", b"$GPGSA,\x01A*41\r\n", "bad_text"),
    ("cr_inside", b"$GPGSA\r,A*00\r\n", "bad_text"),
    ("interrupted_by_new_sentence", b"$GPGGA,184353.07,1929.0", "truncated"),
    ("interrupted_by_ais", b"$GPGGA,1!", "truncated"),
    ("oversized_no_line_end", b"$GPGSV," + b"9" * 200, "oversized"),
    ("oversized_with_line_end", b"$GPGSV," + b"9" * 200 + b"*00\r\n", "oversized"),
    ("garbage_only", b"hello\r\n", "garbage"),
    ("empty_address", b"$*00\r\n", "bad_field"),
    ("address_punctuation", b"$GP-GA,1*" + b"%02X" % xor8(b"GP-GA,1") + b"\r\n", "bad_field"),
    ("address_too_short", b"$GP,1*" + b"%02X" % xor8(b"GP,1") + b"\r\n", "bad_field"),
]


def _with_checksum(body: str) -> bytes:
    return b"$%s*%02X\r\n" % (body.encode(), xor8(body.encode()))


# checksum-valid sentences whose fields do not parse
BAD_FIELDS = [
    ("lat_not_number", "GPGGA,120000,19x9.045,S,02410.506,E,1,04,2.6,100.00,M,,M,,"),
    ("lat_minutes_60", "GPGGA,120000,1960.000,S,02410.506,E,1,04,2.6,100.00,M,,M,,"),
    ("lat_over_90", "GPGGA,120000,9100.000,S,02410.506,E,1,04,2.6,100.00,M,,M,,"),
    ("lon_over_180", "GPRMC,120000,A,1000.000,N,18100.000,E,0,0,010120,,"),
    ("lat_too_short", "GPGLL,19,S,02410.506,E,120000,A"),
    ("bad_hemisphere", "GPGLL,1929.045,X,02410.506,E,120000,A"),
    ("missing_hemisphere", "GPGLL,1929.045,,02410.506,E,120000,A"),
    ("time_hour_25", "GPGGA,250000,,,,,0,00,,,M,,M,,"),
    ("time_letters", "GPGGA,12ab00,,,,,0,00,,,M,,M,,"),
    ("time_bad_fraction", "GPGGA,120000x5,,,,,0,00,,,M,,M,,"),
    ("date_feb_30", "GPRMC,120000,A,,,,,0,0,300224,,"),
    ("date_short", "GPRMC,120000,A,,,,,0,0,3002,,"),
    ("quality_not_int", "GPGGA,120000,,,,,1.5,00,,,M,,M,,"),
    ("speed_not_number", "GPVTG,1,T,,M,fast,N,,K,A"),
    ("hdop_nan", "GPGGA,120000,,,,,0,00,nan,,M,,M,,"),
]


@pytest.mark.parametrize(("data", "kind"), [m[1:] for m in MALFORMED]
                         + [(_with_checksum(b), "bad_field") for _, b in BAD_FIELDS],
                         ids=[m[0] for m in MALFORMED] + [b[0] for b in BAD_FIELDS])
def test_malformed(data: bytes, kind: str) -> None:
    out = feed_all(nmea.Decoder, data + GOOD)
    errs = errors(out)
    assert errs and errs[0].kind == kind and errs[0].protocol == "nmea"
    assert out[-1] == CATALOGUE[0][2], "the good sentence after the bad input must still decode"
    assert messages(out) == [CATALOGUE[0][2]]


def test_oversized_reports_the_cap_then_the_rest_as_garbage() -> None:
    line = b"$GPGSV," + b"9" * 200 + b"*00\r\n"
    out = feed_all(nmea.Decoder, line)
    assert [e.kind for e in errors(out)] == ["oversized", "garbage"]
    assert len(out[0].raw) == nmea.MAX_SENTENCE
    assert b"".join(e.raw for e in errors(out)) == line


def test_sentences_between_82_and_120_chars_are_accepted() -> None:
    frame = nmea.encode_sentence("GP", "TXT", [_LONG_FIELD[:95]])
    assert nmea.NMEA_MAX_SENTENCE < len(frame) <= nmea.MAX_SENTENCE
    (msg,) = feed_all(nmea.Decoder, frame)
    assert msg == nmea.OtherSentence("GP", "TXT", (_LONG_FIELD[:95],))
    with pytest.raises(ValueError):
        nmea.encode_sentence("GP", "TXT", [_LONG_FIELD + "1" * 20])


def test_missing_checksum_accepted_when_allowed_and_counted() -> None:
    dec = nmea.Decoder(require_checksum=False)
    out = dec.feed(b"$GPGLL,4916.45,N,12311.12,W,225444,A,\r\n" + GOOD)
    assert out[0] == Position(lat=49.27416667, lon=-123.18533333, fix=True, sentence="GLL",
                              talker="GP", time_utc="22:54:44")
    assert out[1] == CATALOGUE[0][2]
    assert dec.unchecked == 1
    # a present but wrong checksum is still rejected
    assert dec.feed(b"$GPGSA,A*00\r\n")[0].kind == "bad_checksum"


def test_lowercase_checksum_digits_are_accepted() -> None:
    frame = NO_FIX_GGA.replace(b"*5F", b"*5f")
    assert feed_all(nmea.Decoder, frame) == feed_all(nmea.Decoder, NO_FIX_GGA)
    assert len(messages(feed_all(nmea.Decoder, frame))) == 1


def test_truncated_at_end_of_stream_is_reported_by_flush() -> None:
    dec = nmea.Decoder()
    assert dec.feed(b"$GPGGA,1234") == []
    (err,) = dec.flush()
    assert err.kind == "truncated" and err.raw == b"$GPGGA,1234"


def test_buffer_stays_below_the_cap() -> None:
    dec = nmea.Decoder()
    out = dec.feed(b"$GPGSV," + b"1" * 1000)
    assert dec.buffered < nmea.MAX_SENTENCE
    assert sum(len(e.raw) for e in errors(out)) + dec.buffered == 1007


# -- real sentences from shared/captures -------------------------------------------------------
def test_capture_file_decodes_as_documented() -> None:
    lines = capture_lines("gps_nmea0183.txt")
    out = feed_all(nmea.Decoder, "".join(ln + "\r\n" for ln in lines).encode())
    gga, rmc, gsa, gll, vtg, gsv, bad = out
    assert gga == Position(lat=-19.48408333, lon=24.1751, fix=True, sentence="GGA",
                           talker="GP", time_utc="18:43:53.07", altitude_m=100.0,
                           satellites=4, hdop=2.6, quality=1)
    assert gga.lat == pytest.approx(-19.484083, abs=1e-6)
    assert gga.lon == pytest.approx(24.175100, abs=1e-6)
    assert rmc == Position(lat=49.27416667, lon=-123.18533333, fix=True, sentence="RMC",
                           talker="GP", time_utc="22:54:46", date="1994-11-19",
                           speed_knots=0.5, course_deg=54.7)
    assert gsa == nmea.OtherSentence("GP", "GSA", ("A", "3", "02", "", "", "07", "", "09",
                                                   "24", "26", "", "", "", "", "1.6", "1.6",
                                                   "1.0"))
    assert gll == Position(lat=49.27416667, lon=-123.18533333, fix=True, sentence="GLL",
                           talker="GP", time_utc="22:54:44")
    assert vtg == nmea.Velocity("GP", 108.53, None, 0.04, 0.07, "A", True)
    assert isinstance(gsv, nmea.OtherSentence) and gsv.sentence == "GSV"
    assert gsv.fields[:4] == ("3", "1", "09", "12") and len(gsv.fields) == 19
    # the negative vector: same GGA with checksum 00 (6D expected)
    assert bad.kind == "bad_checksum" and "6D" in bad.detail


def test_no_fix_gga_from_the_reference() -> None:
    (msg,) = feed_all(nmea.Decoder, NO_FIX_GGA)
    assert msg == Position(lat=None, lon=None, fix=False, sentence="GGA", talker="GP",
                           time_utc="20:17:16.684", satellites=0, quality=0)


def test_encoders_match_reference_bytes() -> None:
    assert nmea.encode_gga(time_utc="20:17:16.684", lat=None, lon=None, quality=0,
                           satellites=0, hdop=None, altitude_m=None, geoid_sep_m=0.0,
                           dgps_station="0000") == NO_FIX_GGA
    # protocols.md: "GPGLL,4916.45,N,12311.12,W,225444,A," -> 0x1D
    gll = ["4916.45", "N", "12311.12", "W", "225444", "A", ""]
    assert nmea.encode_sentence("GP", "GLL", gll) == (
        b"$GPGLL,4916.45,N,12311.12,W,225444,A,*1D\r\n")
    assert nmea.encode_sentence("GP", "VTG", ["108.53", "T", "", "M", "0.04", "N", "0.07", "K",
                                              "A"]) == b"$GPVTG,108.53,T,,M,0.04,N,0.07,K,A*31\r\n"
    # u-blox "no fix" VTG
    assert nmea.encode_vtg(course_true_deg=None, speed_knots=None, mode="N") == (
        b"$GPVTG,,T,,M,,N,,K,N*2C\r\n")


def test_coordinate_encoding_carries_minutes_into_degrees() -> None:
    # 59.99999 minutes rounds up to the next whole degree, never to "1960.0000"
    frame = nmea.encode_gll(lat=19.9999999, lon=-0.0000001, time_utc=None)
    assert b",2000.0000,N,00000.0000,W," in frame
    (msg,) = feed_all(nmea.Decoder, frame)
    assert msg.lat == 20.0 and msg.lon == -0.0


def test_encoder_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        nmea.encode_sentence("GP", "GSA", ["a,b"])
    with pytest.raises(ValueError):
        nmea.encode_sentence("GP", "GSA", ["a*"])
    with pytest.raises(ValueError):
        nmea.encode_sentence("GP", "GSA", ["é"])
    with pytest.raises(ValueError):
        nmea.encode_sentence("gp", "GSA", [])
    with pytest.raises(ValueError):
        nmea.encode_sentence("GPS", "GSA", [])
    with pytest.raises(ValueError):
        nmea.encode_gga(time_utc="1:2:3", lat=0.0, lon=0.0)
    with pytest.raises(ValueError):
        nmea.encode_gga(time_utc="25:00:00", lat=0.0, lon=0.0)
    with pytest.raises(ValueError):
        nmea.encode_gll(lat=91.0, lon=0.0, time_utc=None)
    with pytest.raises(ValueError):
        nmea.encode_gll(lat=0.0, lon=-180.5, time_utc=None)
    with pytest.raises(ValueError):
        nmea.Decoder("sideways")  # type: ignore[arg-type]


def test_decode_frame_arg() -> None:
    (msg,) = nmea.decode_frame_arg("$GPGGA,201716.684,,,,,0,00,,,M,0.0,M,,0000*5F")
    assert isinstance(msg, Position) and msg.fix is False and msg.time_utc == "20:17:16.684"
    (err,) = nmea.decode_frame_arg("$GPGGA,201716.684,,,,,0,00,,,M,0.0,M,,0000*00",
                                   sent_by="host")
    assert err.kind == "bad_checksum"
    assert msg.to_dict()["type"] == "position"


# -- property tests ----------------------------------------------------------------------------
@given(lat=st.floats(-90, 90), lon=st.floats(-180, 180), decimals=st.integers(0, 6))
def test_coordinates_roundtrip_within_encoding_resolution(lat: float, lon: float,
                                                          decimals: int) -> None:
    frame = nmea.encode_gll(lat=lat, lon=lon, time_utc=None, minute_decimals=decimals)
    (msg,) = feed_all(nmea.Decoder, frame)
    tolerance = 0.5 / 10 ** decimals / 60 + 1e-8
    assert msg.lat == pytest.approx(lat, abs=tolerance)
    assert msg.lon == pytest.approx(lon, abs=tolerance)


_frames = st.lists(st.sampled_from([c[1] for c in CATALOGUE]), min_size=1, max_size=8)
_garbage = st.binary(max_size=40).map(lambda b: b.replace(b"$", b"").replace(b"!", b""))


@given(frames=_frames, data=st.data())
def test_garbage_between_frames(frames: list[bytes], data: st.DataObject) -> None:
    garbage = [data.draw(_garbage) for _ in frames]
    check_garbage_between(nmea.Decoder, frames, garbage)


@given(blob=st.binary(max_size=2000), chunk=st.integers(1, 300))
def test_arbitrary_bytes_never_raise(blob: bytes, chunk: int) -> None:
    check_never_raises(nmea.Decoder, blob, chunk)


_text = st.text(st.sampled_from("$!*,\r\n0123456789.NSEWAVGPRMC"), max_size=400)


@given(blob=_text, chunk=st.integers(1, 50))
def test_nmea_like_text_never_raises(blob: str, chunk: int) -> None:
    check_never_raises(nmea.Decoder, blob.encode(), chunk)


_pieces = st.lists(st.one_of(st.sampled_from([c[1] for c in CATALOGUE]),
                             st.binary(max_size=30), _text.map(str.encode)), max_size=8)


@given(pieces=_pieces)
def test_bytewise_equals_oneshot_on_mixed_streams(pieces: list[bytes]) -> None:
    check_bytewise_equals_oneshot(nmea.Decoder, b"".join(pieces))
