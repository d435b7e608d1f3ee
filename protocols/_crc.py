"""Checksums used by the device protocols. Table-driven, pure functions over bytes."""

from __future__ import annotations

import binascii
from typing import Final

__all__ = [
    "crc16_gen2",
    "crc16_mcrf4xx",
    "crc16_modbus",
    "crc16_thingmagic",
    "sum8_twos_complement",
    "xor8",
]


def _reflected_table(poly: int) -> tuple[int, ...]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_MODBUS_TABLE: Final = _reflected_table(0xA001)
_MCRF4XX_TABLE: Final = _reflected_table(0x8408)


def crc16_modbus(data: bytes) -> int:
    """CRC-16/MODBUS (reflected 0xA001, init 0xFFFF); sent low byte first. check=0x4B37."""
    crc = 0xFFFF
    t = _MODBUS_TABLE
    for b in data:
        crc = (crc >> 8) ^ t[(crc ^ b) & 0xFF]
    return crc


def crc16_mcrf4xx(data: bytes) -> int:
    """CRC-16/MCRF4XX (reflected 0x8408, init 0xFFFF, no xorout), Chafon readers. check=0x6F91."""
    crc = 0xFFFF
    t = _MCRF4XX_TABLE
    for b in data:
        crc = (crc >> 8) ^ t[(crc ^ b) & 0xFF]
    return crc


def _thingmagic_bitwise(data: bytes) -> int:
    crc = 0xFFFF
    for b in data:
        for bit in range(7, -1, -1):
            carry = crc & 0x8000
            crc = ((crc << 1) | ((b >> bit) & 1)) & 0xFFFF
            if carry:
                crc ^= 0x1021
    return crc


def crc16_thingmagic(data: bytes) -> int:
    """ThingMagic Mercury CalcCRC: poly 0x1021, init 0xFFFF, message bits shifted into the
    register (non-augmented); not CRC-16/CCITT-FALSE. For two or more bytes this equals
    CRC-16/AUG-CCITT (init 0x1D0F) of ``data[:-2]`` XOR the last two bytes (big-endian), which
    lets us use the byte table.
    """
    if len(data) < 2:
        return _thingmagic_bitwise(data)
    return binascii.crc_hqx(data[:-2], 0x1D0F) ^ ((data[-2] << 8) | data[-1])


def crc16_gen2(data: bytes) -> int:
    """EPC Gen2 tag CRC-16 (poly 0x1021, init 0xFFFF, xorout 0xFFFF) over PC + EPC."""
    return binascii.crc_hqx(data, 0xFFFF) ^ 0xFFFF


def sum8_twos_complement(data: bytes) -> int:
    """Two's complement of the 8-bit sum (Impinj R2000 "0xA0" check byte)."""
    return (-sum(data)) & 0xFF


def xor8(data: bytes) -> int:
    """XOR of all bytes."""
    x = 0
    for b in data:
        x ^= b
    return x
