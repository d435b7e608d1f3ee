"""Byte links to devices: serial ports (any pyserial URL, through pyserial-asyncio-fast) and
plain TCP. Both look the same to a driver: ``read()``, ``write()``, ``close()``.

pyserial and OSError exceptions are translated to :class:`edge.errors.TransportError` here.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final, Protocol, Self

import serial
import serial_asyncio_fast

from edge.errors import TransportClosed, TransportError

__all__ = ["READ_CHUNK", "ByteLink", "StreamLink", "open_link", "open_serial", "open_tcp"]

READ_CHUNK: Final = 4096
OPEN_TIMEOUT_S: Final = 10.0


class ByteLink(Protocol):
    url: str

    async def read(self, timeout: float) -> bytes:
        """Up to READ_CHUNK bytes; b"" when nothing arrived within ``timeout``.
        Raises TransportClosed on EOF, TransportError on failure."""
        ...

    async def write(self, data: bytes) -> None: ...

    async def close(self) -> None: ...


class StreamLink:
    """A :class:`ByteLink` over an asyncio stream pair."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                 url: str, device_id: str = "") -> None:
        self._reader = reader
        self._writer = writer
        self.url = url
        self.device_id = device_id
        self.bytes_in = 0
        self.bytes_out = 0

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def read(self, timeout: float) -> bytes:
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # that races with a completed read, and the coordinator would never stop
            async with asyncio.timeout(timeout):
                data = await self._reader.read(READ_CHUNK)
        except TimeoutError:
            return b""
        except (OSError, serial.SerialException) as exc:
            raise TransportError(f"read failed on {self.url}: {exc}", device_id=self.device_id,
                                 url=self.url) from exc
        if not data:
            raise TransportClosed(f"{self.url} closed", device_id=self.device_id, url=self.url)
        self.bytes_in += len(data)
        return data

    async def write(self, data: bytes) -> None:
        try:
            self._writer.write(data)
            await self._writer.drain()
        except (OSError, serial.SerialException, ConnectionError) as exc:
            raise TransportError(f"write failed on {self.url}: {exc}",
                                 device_id=self.device_id, url=self.url) from exc
        self.bytes_out += len(data)

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError, serial.SerialException, ConnectionError):
            await self._writer.wait_closed()


async def open_serial(url: str, *, baudrate: int = 115200, bytesize: int = 8,
                      parity: str = "N", stopbits: float = 1, device_id: str = "") -> StreamLink:
    """Open a serial port by device path or pyserial URL (``/dev/ttyUSB0``, ``socket://``,
    ``rfc2217://``, ``loop://``)."""
    try:
        async with asyncio.timeout(OPEN_TIMEOUT_S):
            reader, writer = await serial_asyncio_fast.open_serial_connection(
                url=url, baudrate=baudrate, bytesize=bytesize, parity=parity,
                stopbits=stopbits)
    except (OSError, serial.SerialException, ValueError, TimeoutError) as exc:
        raise TransportError(f"cannot open serial port {url}: {exc}", device_id=device_id,
                             url=url) from exc
    return StreamLink(reader, writer, url=url, device_id=device_id)


async def open_tcp(host: str, port: int, *, device_id: str = "") -> StreamLink:
    url = f"tcp://{host}:{port}"
    try:
        async with asyncio.timeout(OPEN_TIMEOUT_S):
            reader, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError) as exc:
        raise TransportError(f"cannot connect to {url}: {exc}", device_id=device_id,
                             url=url) from exc
    return StreamLink(reader, writer, url=url, device_id=device_id)


async def open_link(url: str, *, baudrate: int = 115200, bytesize: int = 8, parity: str = "N",
                    stopbits: float = 1, device_id: str = "") -> StreamLink:
    """``tcp://host:port`` opens a TCP connection; anything else is a serial port/URL."""
    if url.startswith("tcp://"):
        host, _, port = url[len("tcp://"):].rpartition(":")
        if not host or not port.isdigit():
            raise TransportError(f"bad TCP url {url!r}; expected tcp://HOST:PORT",
                                 device_id=device_id, url=url)
        return await open_tcp(host, int(port), device_id=device_id)
    return await open_serial(url, baudrate=baudrate, bytesize=bytesize, parity=parity,
                             stopbits=stopbits, device_id=device_id)
