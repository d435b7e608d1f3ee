"""Shared pieces of every sans-IO codec: the error record, the message base and the stream framer.

A codec module defines frozen dataclass messages (subclasses of :class:`Message`), a decoder
(subclass of :class:`StreamDecoder`) and ``encode_*`` functions. Nothing here does I/O or
reads a clock.

Decoders never raise on bad input. ``feed(data)`` returns a list whose items are either
messages or :class:`FrameError` records; a bad frame never hides the good frames after it.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from typing import Any, ClassVar, Final

__all__ = [
    "NEED_MORE",
    "FrameError",
    "Message",
    "NeedMore",
    "StreamDecoder",
    "to_dict",
]


class NeedMore:
    """Sentinel type: the buffer holds the start of a frame but not all of it yet."""

    _instance: ClassVar[NeedMore | None] = None

    def __new__(cls) -> NeedMore:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NEED_MORE"


NEED_MORE: Final = NeedMore()


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex().upper()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, Message):
        return value.to_dict()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def to_dict(obj: Message | FrameError) -> dict[str, Any]:
    """JSON-ready dict of a message or error: ``type`` first, bytes as uppercase hex."""
    return obj.to_dict()


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    """Base of every decoded message. ``type`` names the message kind in JSON output."""

    type: ClassVar[str] = "message"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        for f in dataclasses.fields(self):
            out[f.name] = _jsonable(getattr(self, f.name))
        return out


@dataclasses.dataclass(frozen=True, slots=True)
class FrameError:
    """A structured report of bytes that could not be decoded.

    ``kind`` is a short machine-readable reason (``garbage``, ``bad_checksum``, ``bad_length``,
    ``oversized``, ``bad_text``, ``bad_field``, ``buffer_overflow``, ...), ``raw`` the offending
    bytes, ``offset`` the position of ``raw[0]`` in everything fed to the decoder so far.
    """

    kind: str
    raw: bytes
    offset: int = 0
    detail: str = ""
    protocol: str = ""

    type: ClassVar[str] = "error"

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "error",
            "error": self.kind,
            "protocol": self.protocol,
            "raw": self.raw.hex().upper(),
            "offset": self.offset,
            "detail": self.detail,
        }


# A frame parser looks at ``buf`` from ``start`` (where a sync byte was found) and returns
# NEED_MORE, or (end, item) where ``end`` is the index just past the bytes it consumed and
# ``item`` a Message, a FrameError, a tuple of messages (one frame carrying several, e.g. a
# multi-tag report), or None (bytes consumed silently, e.g. a blank line).
ParseResult = NeedMore | tuple[
    int, "Message | FrameError | tuple[Message | FrameError, ...] | None"]


class StreamDecoder:
    """Buffering, resynchronising, capped stream decoder.

    Subclasses set ``PROTOCOL``, ``MAX_BUFFER`` and implement :meth:`_find_start` (index of the
    next possible frame start at or after ``pos``, or -1) and :meth:`_parse` (see
    ``ParseResult``). A parser that rejects a frame whose boundaries it cannot trust should
    return ``(start + 1, FrameError(...))`` so the decoder resynchronises on the next byte.

    Bytes before a frame start are reported as one ``garbage`` error per contiguous run.
    """

    PROTOCOL: ClassVar[str] = ""
    MAX_BUFFER: ClassVar[int] = 4096

    def __init__(self) -> None:
        self._buf = bytearray()
        self._base = 0  # stream offset of self._buf[0]
        self.errors = 0  # structured errors reported so far
        self.messages = 0  # messages decoded so far

    # -- subclass hooks -------------------------------------------------------------------
    def _find_start(self, buf: bytes, pos: int) -> int:
        raise NotImplementedError

    def _parse(self, buf: bytes, start: int) -> ParseResult:
        raise NotImplementedError

    # -- public API ----------------------------------------------------------------------
    @property
    def buffered(self) -> int:
        """Bytes held while waiting for the rest of a frame."""
        return len(self._buf)

    def error(self, kind: str, raw: bytes, offset: int, detail: str = "") -> FrameError:
        return FrameError(kind, bytes(raw), offset, detail, self.PROTOCOL)

    def feed(self, data: bytes) -> list[Message | FrameError]:
        """Consume ``data`` and return every complete message and error it finished."""
        if data:
            self._buf += data
        buf = bytes(self._buf)
        out: list[Message | FrameError] = []
        append = out.append
        pos = 0
        n = len(buf)
        find_start = self._find_start
        parse = self._parse
        while pos < n:
            start = find_start(buf, pos)
            if start < 0:
                append(self.error("garbage", buf[pos:], self._base + pos))
                pos = n
                break
            if start > pos:
                append(self.error("garbage", buf[pos:start], self._base + pos))
            res = parse(buf, start)
            if res is NEED_MORE:
                pos = start
                break
            end, item = res  # type: ignore[misc]
            if item is not None:
                for it in item if isinstance(item, tuple) else (item,):
                    if isinstance(it, FrameError) and not it.protocol:
                        it = dataclasses.replace(it, protocol=self.PROTOCOL)
                    append(it)
            pos = end
        if pos:
            del self._buf[:pos]
            self._base += pos
        if len(self._buf) > self.MAX_BUFFER:
            append(self.error("buffer_overflow", bytes(self._buf), self._base,
                              f"partial frame exceeds MAX_BUFFER={self.MAX_BUFFER}"))
            self._base += len(self._buf)
            self._buf.clear()
        if out:
            errs = sum(1 for o in out if o.type == "error")
            self.errors += errs
            self.messages += len(out) - errs
        return out

    def flush(self) -> list[Message | FrameError]:
        """Report whatever is still buffered as a ``truncated`` error (end of stream)."""
        if not self._buf:
            return []
        err = self.error("truncated", bytes(self._buf), self._base, "stream ended mid-frame")
        self._base += len(self._buf)
        self._buf.clear()
        self.errors += 1
        return [err]


def decode_all(decoder_factory: Callable[[], StreamDecoder],
               data: bytes) -> list[Message | FrameError]:
    """One-shot helper: feed ``data`` to a fresh decoder and flush it."""
    dec = decoder_factory()
    return dec.feed(data) + dec.flush()
