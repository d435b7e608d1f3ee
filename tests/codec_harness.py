"""The standard test set every codec gets (STYLE.md habit 3), as reusable checks.

Each codec test module builds a catalogue of ``(encoded frame, expected message)`` pairs and
calls these helpers; see tests/protocols/test_r2000.py for the pattern.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from protocols._base import FrameError, Message, StreamDecoder

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CAPTURES = SHARED / "captures"

DecoderFactory = Callable[[], StreamDecoder]


def capture_lines(name: str) -> list[str]:
    """Non-comment, non-empty lines of ``shared/captures/<name>``."""
    path = CAPTURES / name
    assert path.exists(), f"capture file missing: {path}"
    return [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


Decoded = list[Message | FrameError]


def feed_all(factory: DecoderFactory, data: bytes, *, flush: bool = True) -> Decoded:
    dec = factory()
    out = dec.feed(data)
    if flush:
        out += dec.flush()
    return out


def errors(items: Sequence[object]) -> list[FrameError]:
    return [i for i in items if isinstance(i, FrameError)]


def messages(items: Sequence[object]) -> list[Message]:
    return [i for i in items if isinstance(i, Message)]


def check_roundtrip(factory: DecoderFactory, frame: bytes, expected: Message) -> None:
    """One encoded frame decodes to exactly the expected message and nothing else."""
    out = feed_all(factory, frame)
    assert out == [expected], f"{frame.hex(' ')} decoded to {out!r}"


def check_prefixes_incomplete(factory: DecoderFactory, frame: bytes) -> None:
    """Every strict prefix of a valid frame yields nothing: no message, no error."""
    for i in range(len(frame)):
        dec = factory()
        out = dec.feed(frame[:i])
        assert out == [], f"prefix of {i} bytes of {frame.hex(' ')} yielded {out!r}"
        assert dec.buffered == i


def check_bytewise_equals_oneshot(factory: DecoderFactory, stream: bytes) -> None:
    """Feeding one byte at a time gives the same messages as feeding everything at once."""
    one = feed_all(factory, stream)
    dec = factory()
    many: Decoded = []
    for b in stream:
        many += dec.feed(bytes((b,)))
    many += dec.flush()
    assert messages(many) == messages(one)
    # errors may be split differently (garbage runs), but the same bytes are reported bad
    assert b"".join(e.raw for e in errors(many)) == b"".join(e.raw for e in errors(one))


def check_garbage_between(factory: DecoderFactory, frames: Sequence[bytes],
                          garbage: Sequence[bytes]) -> None:
    """Garbage chunks interleaved with valid frames: every valid frame still decodes, in
    order, and everything else is reported as structured errors (nothing raises)."""
    expected = [m for f in frames for m in feed_all(factory, f)]
    stream = b"".join(g + f for g, f in zip(garbage, frames, strict=True))
    out = feed_all(factory, stream)
    assert all(isinstance(o, Message | FrameError) for o in out)
    assert messages(out) == expected
    bad = b"".join(e.raw for e in errors(out))
    assert len(bad) == sum(len(g) for g in garbage)


def check_never_raises(factory: DecoderFactory, data: bytes, chunk: int) -> None:
    """Arbitrary bytes in arbitrary chunks: only messages and structured errors come out, and
    every byte fed is either decoded, reported, or still buffered below the cap."""
    dec = factory()
    out: Decoded = []
    for i in range(0, len(data), max(1, chunk)):
        out += dec.feed(data[i:i + chunk])
    assert all(isinstance(o, Message | FrameError) for o in out)
    assert dec.buffered <= dec.MAX_BUFFER
    for e in errors(out):
        assert e.kind and isinstance(e.raw, bytes)
