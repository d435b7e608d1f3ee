"""The gateway's Ed25519 signing key (``pledgewatch edge keygen``).

* private key: PEM, PKCS#8, unencrypted, created with mode 0600 in the ``open`` call itself
  (``O_CREAT | O_EXCL``), so it is never readable by anyone else, not even for an instant,
  and an existing key is never overwritten;
* public key: ``<key file>.pub`` holding the raw 32-byte key as base64 text, one line - what
  the cloud admin registers for the gateway (``public_key_b64``).

:func:`load_private_key` refuses a key file that group or others may access (like OpenSSH),
and reports a missing, unreadable or corrupt file as one :class:`KeyFileError` line.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import stat
from pathlib import Path
from typing import Final

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.errors import KeyFileError

__all__ = [
    "KEY_FILE_MODE",
    "MAX_KEY_FILE_BYTES",
    "PUBLIC_KEY_BYTES",
    "generate_keypair",
    "load_private_key",
    "public_key_b64",
    "public_key_from_b64",
    "public_key_path",
]

KEY_FILE_MODE: Final = 0o600
PUBLIC_KEY_BYTES: Final = 32
MAX_KEY_FILE_BYTES: Final = 16 * 1024  # a PEM Ed25519 key is 119 bytes
_GROUP_OTHER_BITS: Final = 0o077


def public_key_path(path: Path | str) -> Path:
    """``gateway.key`` -> ``gateway.key.pub``."""
    p = Path(path)
    return p.with_name(p.name + ".pub")


def public_key_b64(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The raw 32-byte public key as standard base64 (44 characters)."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def public_key_from_b64(text: str) -> Ed25519PublicKey:
    """Parse what :func:`public_key_b64` wrote; ``ValueError`` if it is not 32 bytes."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"public key is not base64: {exc}") from None
    if len(raw) != PUBLIC_KEY_BYTES:
        raise ValueError(f"public key is {len(raw)} bytes, expected {PUBLIC_KEY_BYTES}")
    return Ed25519PublicKey.from_public_bytes(raw)


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` exclusively with ``mode`` (never widened later), write, fsync."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def generate_keypair(path: Path | str) -> Ed25519PrivateKey:
    """Create a new key at ``path`` (mode 0600) and its ``.pub``; return the private key.

    Refuses to overwrite either file (``KeyFileError`` reason ``exists``). If the public key
    cannot be written, the private key just created is removed again.
    """
    key_path = Path(path)
    pub_path = public_key_path(key_path)
    for p in (key_path, pub_path):
        if p.exists() or p.is_symlink():
            raise KeyFileError(p, "already exists; refusing to overwrite a key",
                               reason="exists")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    try:
        _write_new(key_path, pem, KEY_FILE_MODE)
    except FileExistsError:
        raise KeyFileError(key_path, "already exists; refusing to overwrite a key",
                           reason="exists") from None
    except OSError as exc:
        raise KeyFileError(key_path, f"cannot create: {exc.strerror or exc}",
                           reason="unwritable") from exc
    try:
        _write_new(pub_path, (public_key_b64(key) + "\n").encode("ascii"), 0o644)
        _fsync_dir(key_path.parent if str(key_path.parent) else Path("."))
    except OSError as exc:
        with contextlib.suppress(OSError):
            key_path.unlink()
        if isinstance(exc, FileExistsError):
            raise KeyFileError(pub_path, "already exists; refusing to overwrite a key",
                               reason="exists") from None
        raise KeyFileError(pub_path, f"cannot create: {exc.strerror or exc}",
                           reason="unwritable") from exc
    return key


def load_private_key(path: Path | str) -> Ed25519PrivateKey:
    """Load the gateway key written by :func:`generate_keypair`.

    Raises :class:`KeyFileError` (one line naming the path) when the file is missing, not a
    regular file, unreadable, accessible to group or others (``reason="insecure_mode"``,
    with ``mode``), too large, or not an unencrypted PEM Ed25519 private key.
    """
    key_path = Path(path)
    try:
        fd = os.open(key_path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise KeyFileError(key_path, "does not exist (create it with `pledgewatch edge keygen`)",
                           reason="missing") from None
    except PermissionError:
        raise KeyFileError(key_path, "is not readable by this user", reason="unreadable") \
            from None
    except OSError as exc:  # ELOOP (a symlink), EISDIR, EIO ...
        raise KeyFileError(key_path, f"cannot be opened: {exc.strerror or exc}",
                           reason="unreadable") from None
    try:
        st = os.fstat(fd)  # the file we opened, not whatever the path points to now
        mode = stat.S_IMODE(st.st_mode)
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(key_path, "is not a regular file", reason="not_a_file",
                               mode=mode)
        if mode & _GROUP_OTHER_BITS:
            raise KeyFileError(key_path, f"has mode {mode:04o}, which lets other users read "
                               f"or change it; run `chmod 600 {key_path}`",
                               reason="insecure_mode", mode=mode)
        if st.st_size > MAX_KEY_FILE_BYTES:
            raise KeyFileError(key_path, f"is {st.st_size} bytes, too large for a key file",
                               reason="corrupt", mode=mode)
        try:
            data = os.read(fd, MAX_KEY_FILE_BYTES + 1)
        except OSError as exc:
            raise KeyFileError(key_path, f"cannot be read: {exc.strerror or exc}",
                               reason="unreadable", mode=mode) from None
    finally:
        os.close(fd)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:  # the key is encrypted
        raise KeyFileError(key_path, "is encrypted; the gateway needs an unencrypted key",
                           reason="corrupt", mode=mode) from None
    except (ValueError, UnsupportedAlgorithm):
        raise KeyFileError(key_path, "is not a PEM private key (corrupt or wrong file)",
                           reason="corrupt", mode=mode) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(key_path, f"holds a {type(key).__name__}, not an Ed25519 key",
                           reason="wrong_type", mode=mode)
    return key
