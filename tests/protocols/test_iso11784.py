"""ISO 11784 animal IDs: display forms, bit-order detection, the EPC convention, captures."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from protocols import iso11784 as iso
from protocols._base import FrameError
from tests.codec_harness import capture_lines

TEST_ANIMAL = iso.AnimalId(999, 123456789012)


def test_the_four_display_forms_of_the_test_animal_agree() -> None:
    forms = capture_lines("animal_id_iso11784.txt")[:4]
    assert forms == ["999123456789012", "3E7.1CBE991A14", "8000F9DCBE991A14",
                     "2858997D3B9F0001"]
    parsed = [iso.parse(f) for f in forms]
    assert parsed == [TEST_ANIMAL] * 4
    assert (TEST_ANIMAL.decimal, TEST_ANIMAL.dot_hex, TEST_ANIMAL.hex_msb,
            TEST_ANIMAL.hex_lsb) == tuple(forms)
    assert TEST_ANIMAL.code == 0x8000F9DCBE991A14


def test_bit_fields_of_the_test_animal() -> None:
    a = iso.parse("8000F9DCBE991A14")
    assert (a.country_code, a.national_id, a.animal_flag, a.data_block_flag, a.reserved) == (
        999, 123456789012, True, False, 0)


def test_proxmark_sample() -> None:
    line = capture_lines("animal_id_iso11784.txt")[4]
    decimal, bracketed = line.split("[")
    a = iso.parse(decimal)
    assert (a.country_code, a.national_id) == (985, 121004515220)
    # Proxmark's bracketed "raw" is the 15-digit decimal number written in hex, not the code
    raw = bracketed.strip(" ]")
    assert raw == "37FF65B88EF94" and int(raw, 16) == int(a.decimal)
    assert a.hex_msb != raw.rjust(16, "0")
    # and the fields as Proxmark prints them: "0985-121004515220"
    assert iso.parse("0985-121004515220") == a
    assert a.hex_msb == "8000F65C2C6E5F94" and a.dot_hex == "3D9.1C2C6E5F94"


def test_icar_examples() -> None:
    de, us = (iso.parse(t) for t in capture_lines("animal_id_iso11784.txt")[5:7])
    assert (de.country_code, de.national_id, de.decimal) == (276, 312312345, "276000312312345")
    assert (us.country_code, us.national_id, us.decimal) == (840, 3123456789, "840003123456789")


@pytest.mark.parametrize("text", [
    " 999123456789012 ", "999-123456789012", "999 123456789012", "0999-123456789012",
    "3e7.1cbe991a14", "0x8000F9DCBE991A14", "80 00 F9 DC BE 99 1A 14", "80:00:f9:dc:be:99:1a:14",
    "2858997d3b9f0001",
])
def test_accepted_spellings(text: str) -> None:
    assert iso.parse(text) == TEST_ANIMAL


@pytest.mark.parametrize("text", [
    "", "99912345678901", "9991234567890123x", "3E7.1CBE991A1", "3E7-1CBE991A14",
    "8000F9DCBE991A1", "1999-123456789012", "٩٩٩١٢٣٤٥٦٧٨٩٠١٢", "hello",
])
def test_format_errors(text: str) -> None:
    with pytest.raises(iso.Iso11784FormatError) as info:
        iso.parse(text)
    assert isinstance(info.value, iso.Iso11784Error) and isinstance(info.value, ValueError)
    assert info.value.text == text


@pytest.mark.parametrize(("text", "field"), [
    ("999274877906944", "national_id"),  # 2**38
    ("3E8.0000000001", "country_code"),  # 1000
    ("3E7.4000000000", "national_id"),
])
def test_range_errors(text: str, field: str) -> None:
    with pytest.raises(iso.Iso11784RangeError) as info:
        iso.parse(text)
    assert info.value.field == field


def test_limits() -> None:
    top = iso.AnimalId(iso.MAX_COUNTRY, iso.MAX_NATIONAL_ID)
    assert top.decimal == "999274877906943" and iso.parse(top.decimal) == top
    assert iso.parse("000000000000000") == iso.AnimalId(0, 0)
    for bad in (dict(country_code=1000, national_id=1), dict(country_code=1, national_id=-1),
                dict(country_code=1, national_id=1, reserved=1 << 14)):
        with pytest.raises(iso.Iso11784RangeError):
            iso.AnimalId(**bad)  # type: ignore[arg-type]
    with pytest.raises(iso.Iso11784RangeError):
        iso.from_code(1 << 64)
    with pytest.raises(iso.Iso11784RangeError):  # country field 1023
        iso.from_code(0x3FF << 38)
    with pytest.raises(ValueError):
        iso.from_code(1, order="middle")  # type: ignore[arg-type]


def test_raw_with_reserved_bits_needs_an_explicit_order() -> None:
    tagged = iso.AnimalId(999, 123456789012, reserved=0b101)
    with pytest.raises(iso.Iso11784FormatError):
        iso.parse(tagged.hex_msb)
    assert iso.parse(tagged.hex_msb, raw_order="msb") == tagged
    assert iso.parse(tagged.hex_lsb, raw_order="lsb") == tagged


def test_ambiguous_raw_prefers_the_reading_with_the_animal_flag() -> None:
    # national ID with bits 1..14 clear: both readings have zero reserved bits
    non_animal = iso.AnimalId(0, (1 << 15) | 1, animal_flag=False)
    value = int(non_animal.hex_msb, 16)
    reverse = int(non_animal.hex_lsb, 16)
    assert value >> 49 & iso.MAX_RESERVED == 0 and reverse >> 49 & iso.MAX_RESERVED == 0
    assert (reverse >> 38) & 0x3FF <= iso.MAX_COUNTRY
    # the MSB reading has no animal flag, the LSB reading has one -> LSB wins
    assert reverse >> 63 == 1
    assert iso.parse(non_animal.hex_msb) == iso.from_code(value, order="lsb")
    assert iso.parse(non_animal.hex_msb, raw_order="msb") == non_animal
    # both with the animal flag -> MSB wins
    animal = iso.AnimalId(0, (1 << 15) | 1)
    assert iso.parse(animal.hex_msb) == animal


def test_data_block_flag_roundtrip() -> None:
    a = iso.AnimalId(276, 123456789012, data_block_flag=True)
    assert a.hex_msb == "8001451CBE991A14"
    assert iso.parse(a.hex_msb) == a and iso.parse(a.hex_lsb) == a


def test_to_dict_includes_display_forms() -> None:
    d = TEST_ANIMAL.to_dict()
    assert d["type"] == "animal_id"
    assert d["decimal"] == "999123456789012" and d["hex_lsb"] == "2858997D3B9F0001"
    assert d["country_code"] == 999 and d["animal_flag"] is True


# -- pledgewatch EPC convention --------------------------------------------------------------
def test_epc_convention() -> None:
    epc = iso.to_epc(TEST_ANIMAL)
    assert epc.hex().upper() == "E9008000F9DCBE991A140000"
    assert iso.from_epc(epc) == TEST_ANIMAL
    assert iso.from_epc(epc.hex().upper()) == TEST_ANIMAL
    assert iso.from_epc(epc.hex()) == TEST_ANIMAL


@pytest.mark.parametrize("epc", [
    "E28068940000501E5A7C1234",  # a real Impinj/Alien chip EPC
    "300833B2DDD9014000000000",  # SGTIN-96 header
    "E9018000F9DCBE991A140000",  # reserved byte set
    "E9008000F9DCBE991A140001",  # trailing bytes not zero
    "E9008000F9DCBE991A14",  # too short
    "E900FFFFFFFFFFFFFFFF0000",  # country field 1023
    "not hex at all",
    "",
])
def test_from_epc_returns_none_for_other_epcs(epc: str) -> None:
    assert iso.from_epc(epc) is None


# -- CLI -----------------------------------------------------------------------------------
def test_decode_frame_arg() -> None:
    assert iso.decode_frame_arg("3E7.1CBE991A14") == [TEST_ANIMAL]
    assert iso.decode_frame_arg("E9 00 8000F9DCBE991A14 0000", sent_by="host") == [TEST_ANIMAL]
    (err,) = iso.decode_frame_arg("37FF65B88EF94")
    assert isinstance(err, FrameError)
    assert err.kind == "bad_field" and err.protocol == "iso11784" and err.raw == b"37FF65B88EF94"
    (err,) = iso.decode_frame_arg("999274877906944")
    assert isinstance(err, FrameError) and "national_id" in err.detail


# -- properties ------------------------------------------------------------------------------
_animals = st.builds(iso.AnimalId, st.integers(0, iso.MAX_COUNTRY),
                     st.integers(0, iso.MAX_NATIONAL_ID), st.booleans(), st.booleans(),
                     st.integers(0, iso.MAX_RESERVED))


@given(a=_animals)
def test_every_form_roundtrips(a: iso.AnimalId) -> None:
    assert iso.parse(a.hex_msb, raw_order="msb") == a
    assert iso.parse(a.hex_lsb, raw_order="lsb") == a
    assert iso.from_code(a.code) == a
    assert iso.from_epc(iso.to_epc(a)) == a
    plain = iso.AnimalId(a.country_code, a.national_id)
    assert iso.parse(a.decimal) == plain
    assert iso.parse(a.dot_hex) == plain
    assert len(a.decimal) == 15 and len(a.hex_msb) == len(a.hex_lsb) == 16


@given(a=_animals)
def test_bit_order_detection_for_animal_codes(a: iso.AnimalId) -> None:
    animal = iso.AnimalId(a.country_code, a.national_id, data_block_flag=a.data_block_flag)
    # a normal animal code (flag set, reserved clear) in MSB order is always read right
    assert iso.parse(animal.hex_msb) == animal
    # in LSB order it is, unless the MSB reading is also a valid animal code (documented
    # ambiguity: national-ID bits 1..14 clear and bit 0 set)
    misread = int(animal.hex_lsb, 16)
    assume(not (misread >> 63 and misread >> 49 & iso.MAX_RESERVED == 0
                and (misread >> 38) & 0x3FF <= iso.MAX_COUNTRY))
    assert iso.parse(animal.hex_lsb) == animal


@given(text=st.text(max_size=40))
def test_parse_raises_only_its_own_errors(text: str) -> None:
    with contextlib.suppress(iso.Iso11784Error):
        iso.parse(text)
    (out,) = iso.decode_frame_arg(text)
    assert out.type in ("animal_id", "error")
