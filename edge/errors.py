"""The edge exception tree. Foreign exceptions (pyserial, OSError, paho) are translated into
these at the transport boundary with ``raise ... from exc`` and never leak further in."""

from __future__ import annotations

__all__ = ["DeviceSilent", "EdgeError", "TransportClosed", "TransportError"]


class EdgeError(Exception):
    """Root of every edge error. ``device_id`` names the device concerned, if any."""

    def __init__(self, message: str, *, device_id: str = "") -> None:
        super().__init__(message)
        self.device_id = device_id


class TransportError(EdgeError):
    """The link to a device could not be opened, or failed while in use."""

    def __init__(self, message: str, *, device_id: str = "", url: str = "") -> None:
        super().__init__(message, device_id=device_id)
        self.url = url


class TransportClosed(TransportError):
    """The device end closed the link (EOF)."""


class DeviceSilent(EdgeError):
    """No complete frame arrived within the device's silence timeout."""

    def __init__(self, message: str, *, device_id: str = "", silent_s: float = 0.0) -> None:
        super().__init__(message, device_id=device_id)
        self.silent_s = silent_s
