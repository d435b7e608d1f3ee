"""Garbage through every device decoder, in every role (tests/fuzz/catalogue.py).

What a decoder promises (protocols/_base.py, docs/protocols.md): bad bytes never raise out of
``feed``; they come out as error records of the documented kinds, at offsets inside what was
fed, and the buffer stays under its cap; and the decoder keeps working: a valid frame after
garbage still decodes. The per-codec tests already run Hypothesis over arbitrary bytes; this
adds a fixed budget of random and mutated streams per decoder (``make fuzz`` runs 10^6 bytes
per decoder: ``python -m bench.fuzz``) and the recovery property.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols._base import FrameError, Message, StreamDecoder
from tests.fuzz.catalogue import CODECS, MODULES, Codec, random_stream

# docs/protocols.md, "Error records"
ERROR_KINDS = frozenset({"garbage", "bad_checksum", "bad_length", "bad_field", "bad_text",
                         "oversized", "truncated", "buffer_overflow"})
BUDGET_BYTES = 50_000  # per decoder in `make test`; bench/fuzz.py runs 10^6
IDS = [c.name for c in CODECS]


def test_catalogue_holds_every_decoder() -> None:
    """A new codec module (or a Decoder in a module not listed) must join the fuzz run."""
    import protocols

    found = set()
    for info in pkgutil.iter_modules(protocols.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"protocols.{info.name}")
        decoder = getattr(module, "Decoder", None)
        if inspect.isclass(decoder) and issubclass(decoder, StreamDecoder):
            found.add(info.name)
    assert found == set(MODULES)
    assert {c.name.split(".")[0] for c in CODECS} == found


def _check(codec: Codec, dec: StreamDecoder, out: list[Message | FrameError], fed: int) -> None:
    assert dec.buffered <= dec.MAX_BUFFER, codec.name
    for item in out:
        assert isinstance(item, Message | FrameError), (codec.name, item)
        if isinstance(item, FrameError):
            assert item.kind in ERROR_KINDS, (codec.name, item.kind)
            assert item.offset >= 0 and item.offset + len(item.raw) <= fed, (codec.name, item)


@pytest.mark.parametrize("codec", CODECS, ids=IDS)
def test_a_budget_of_garbage_never_escapes_the_error_path(codec: Codec) -> None:
    rng = random.Random(f"fuzz-{codec.name}")
    data = random_stream(rng, codec, BUDGET_BYTES)
    dec = codec.decoder()
    fed = 0
    out: list[Message | FrameError] = []
    pos = 0
    while pos < len(data):
        chunk = data[pos:pos + rng.choice((1, 7, 64, 512, 4096))]
        pos += len(chunk)
        fed += len(chunk)
        got = dec.feed(chunk)
        _check(codec, dec, got, fed)
        out += got
    tail = dec.flush()
    _check(codec, dec, tail, fed)
    assert dec.buffered == 0
    assert dec.errors == sum(isinstance(o, FrameError) for o in out + tail)
    assert dec.messages == sum(isinstance(o, Message) for o in out + tail)
    assert dec.errors > 0  # the stream really was bad
    _assert_recovers(codec, dec)


def _assert_recovers(codec: Codec, dec: StreamDecoder) -> None:
    """Feed valid frames until one comes out whole with nothing left buffered (bounded by the
    decoder's buffer cap: a garbage header may claim up to that much), then one more frame
    must decode to exactly its messages."""
    expected = codec.decoder().feed(codec.frame)
    assert expected and not any(isinstance(e, FrameError) for e in expected)
    budget = dec.MAX_BUFFER + 2 * len(codec.frame)
    # feed several copies per call once past the first few, so a 1 MiB cap stays cheap
    fed = 0
    while True:
        copies = 1 if fed < 4 * len(codec.frame) else max(1, 4096 // len(codec.frame))
        out = dec.feed(codec.frame * copies)
        fed += len(codec.frame) * copies
        if out[-len(expected):] == expected and dec.buffered == 0:
            break
        assert fed <= budget, f"{codec.name}: no valid frame decoded after {fed} bytes"
    assert dec.feed(codec.frame) == expected


@pytest.mark.parametrize("codec", CODECS, ids=IDS)
@settings(max_examples=40)
@given(garbage=st.binary(max_size=600), chunk=st.integers(1, 97))
def test_a_valid_frame_after_garbage_still_decodes(codec: Codec, garbage: bytes,
                                                   chunk: int) -> None:
    dec = codec.decoder()
    fed = 0
    for i in range(0, len(garbage), chunk):
        piece = garbage[i:i + chunk]
        fed += len(piece)
        _check(codec, dec, dec.feed(piece), fed)
    _assert_recovers(codec, dec)
