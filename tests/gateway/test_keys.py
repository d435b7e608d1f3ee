"""Gateway key files: created private (0600) and never overwritten; refused when readable by
others, missing, corrupt or of the wrong kind, with one line naming the file."""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.errors import GatewayError, KeyFileError
from gateway.keys import (
    generate_keypair,
    load_private_key,
    public_key_b64,
    public_key_from_b64,
    public_key_path,
)


@pytest.fixture
def wide_umask() -> Iterator[None]:
    """The key must be private even when the process umask would allow everything."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_generate_writes_private_key_0600_and_public_b64(tmp_path: Path,
                                                         wide_umask: None) -> None:
    key_file = tmp_path / "gateway.key"
    key = generate_keypair(key_file)
    assert _mode(key_file) == 0o600
    assert key_file.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    pub_file = public_key_path(key_file)
    assert pub_file == tmp_path / "gateway.key.pub"
    text = pub_file.read_text()
    assert text.endswith("\n") and text.count("\n") == 1
    raw = base64.b64decode(text.strip(), validate=True)
    assert raw == key.public_key().public_bytes(serialization.Encoding.Raw,
                                                serialization.PublicFormat.Raw)
    assert len(raw) == 32
    loaded = load_private_key(key_file)
    assert public_key_b64(loaded) == text.strip() == public_key_b64(key.public_key())
    public_key_from_b64(text).verify(loaded.sign(b"batch"), b"batch")


def test_generate_never_overwrites(tmp_path: Path) -> None:
    key_file = tmp_path / "gateway.key"
    first = generate_keypair(key_file)
    before = key_file.read_bytes()
    with pytest.raises(KeyFileError) as err:
        generate_keypair(key_file)
    assert err.value.reason == "exists" and err.value.path == key_file
    assert key_file.read_bytes() == before
    assert public_key_b64(load_private_key(key_file)) == public_key_b64(first)


def test_generate_refuses_when_only_the_pub_exists(tmp_path: Path) -> None:
    key_file = tmp_path / "gateway.key"
    public_key_path(key_file).write_text("somebody else's key\n")
    with pytest.raises(KeyFileError) as err:
        generate_keypair(key_file)
    assert err.value.reason == "exists"
    assert not key_file.exists()
    assert public_key_path(key_file).read_text() == "somebody else's key\n"


def test_generate_refuses_a_symlink_in_place(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    (tmp_path / "gateway.key").symlink_to(target)
    with pytest.raises(KeyFileError):
        generate_keypair(tmp_path / "gateway.key")
    assert not target.exists()


def test_generate_into_missing_directory_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError) as err:
        generate_keypair(tmp_path / "nope" / "gateway.key")
    assert err.value.reason == "unwritable"
    assert "\n" not in str(err.value) and "nope" in str(err.value)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o602, 0o700 | 0o004])
def test_load_refuses_key_others_may_access(tmp_path: Path, mode: int) -> None:
    key_file = tmp_path / "gateway.key"
    generate_keypair(key_file)
    key_file.chmod(mode)
    with pytest.raises(KeyFileError) as err:
        load_private_key(key_file)
    e = err.value
    assert e.reason == "insecure_mode" and e.mode == mode and e.path == key_file
    msg = str(e)
    assert "\n" not in msg and str(key_file) in msg and f"{mode:04o}" in msg
    assert "chmod 600" in msg
    assert isinstance(e, GatewayError) and not e.retryable


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_load_accepts_owner_only_modes(tmp_path: Path, mode: int) -> None:
    key_file = tmp_path / "gateway.key"
    generate_keypair(key_file)
    key_file.chmod(mode)
    assert isinstance(load_private_key(key_file), Ed25519PrivateKey)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _ec_pem() -> bytes:
    return generate_private_key(SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())


def _encrypted_pem() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"))


@pytest.mark.parametrize(("content", "reason"), [
    (b"", "corrupt"),
    (b"not a key at all\n", "corrupt"),
    (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "corrupt"),
    (b"\x00\xff" * 10, "corrupt"),
    (b"A" * 20_000, "corrupt"),
    (_ec_pem(), "wrong_type"),
    (_encrypted_pem(), "corrupt"),
], ids=["empty", "text", "bad-pem", "binary", "huge", "ec-key", "encrypted"])
def test_load_reports_bad_content_in_one_line(tmp_path: Path, content: bytes,
                                              reason: str) -> None:
    key_file = tmp_path / "gateway.key"
    _write_private(key_file, content)
    with pytest.raises(KeyFileError) as err:
        load_private_key(key_file)
    assert err.value.reason == reason
    assert "\n" not in str(err.value) and str(key_file) in str(err.value)


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError) as err:
        load_private_key(tmp_path / "absent.key")
    assert err.value.reason == "missing"
    assert "keygen" in str(err.value) and "\n" not in str(err.value)


def test_load_directory_and_symlink(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError) as err:
        load_private_key(tmp_path)
    assert err.value.reason in ("unreadable", "not_a_file")
    real = tmp_path / "real.key"
    generate_keypair(real)
    link = tmp_path / "link.key"
    link.symlink_to(real)
    with pytest.raises(KeyFileError) as err:
        load_private_key(link)  # O_NOFOLLOW: the configured path itself must be the key
    assert err.value.reason == "unreadable"


@pytest.mark.parametrize("text", ["", "abc", base64.b64encode(b"x" * 31).decode(),
                                  base64.b64encode(b"x" * 33).decode(), "!!!!"])
def test_public_key_from_b64_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        public_key_from_b64(text)
