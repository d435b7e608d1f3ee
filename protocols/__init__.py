"""Sans-IO device protocol codecs: bytes in, messages out; messages in, bytes out.

Stdlib only. No sockets, serial ports, asyncio, MQTT or clock reads: time is an argument.
Each codec module has a stateful ``Decoder`` with ``feed(bytes) -> list[Message | FrameError]``
and ``encode_*`` functions for both the host and the device role.
"""

from protocols._base import NEED_MORE, FrameError, Message, StreamDecoder
from protocols.messages import Position, ScaleStatus, TagRead, Weight

__all__ = [
    "NEED_MORE",
    "FrameError",
    "Message",
    "Position",
    "ScaleStatus",
    "StreamDecoder",
    "TagRead",
    "Weight",
]
