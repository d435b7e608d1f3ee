"""Secrets at rest and at start-up: API tokens exist only as hashes (the database files and
the server's log never hold a usable token), the cloud will not start with its demo secret
outside the demo, and a gateway key is written owner-only whatever the umask.

(Covered elsewhere, not repeated: a gateway refuses to start with a group/other-readable key
- tests/gateway/test_config.py and test_keys.py; the settings-level default-secret check -
tests/cloud/test_api.py. There is no per-token rate limit to test: reported to the lead.)"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from cloud.db.models import ApiToken
from cloud.db.session import make_engine, make_sessionmaker
from cloud.settings import DEMO_SECRET, CloudSettings
from gateway.keys import load_private_key
from tests.chaos.support import CloudProcess
from tests.cloud.bank_setup import admin
from tests.services import free_port


def test_tokens_are_stored_hashed_and_never_logged(tmp_path: Path) -> None:
    db_file = tmp_path / "cloud.db"
    db_url = f"sqlite:///{db_file}"
    admin(db_url, "create-bank", "TB", "--name", "Test Bank")
    tokens = []
    for role in ("viewer", "analyst", "admin"):
        admin(db_url, "create-user", "--bank", "TB", f"{role}@tb.test", "--role", role)
        tokens.append(admin(db_url, "create-token", "--bank", "TB", f"{role}@tb.test")
                      .split()[-1])
    with CloudProcess(tmp_path, db_url) as cloud:
        for token in tokens:  # use them, so anything that caches or logs them has a chance
            resp = httpx.get(f"{cloud.base}/v1/sites", headers={
                "Authorization": f"Bearer {token}"}, timeout=10)
            assert resp.status_code == 200, resp.text
        log = cloud.log_path.read_bytes()
    engine = make_engine(db_url)
    try:
        with make_sessionmaker(engine)() as s:
            stored = {bytes(t.token_hash) for t in s.scalars(select(ApiToken))}
    finally:
        engine.dispose()
    assert stored == {hashlib.sha256(t.encode()).digest() for t in tokens}
    files = [p for p in tmp_path.iterdir() if p.name.startswith("cloud.db")]  # + -wal, -shm
    assert files
    for token in tokens:
        secret = token.split("_", 2)[2]
        assert len(secret) >= 32
        for path in files:
            assert secret.encode() not in path.read_bytes(), f"token secret in {path.name}"
        assert secret.encode() not in log, "token secret in the server log"


@pytest.mark.parametrize("secret", [None, DEMO_SECRET])
def test_cloud_serve_refuses_the_demo_secret(tmp_path: Path, secret: str | None) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLEDGEWATCH_")}
    env["PLEDGEWATCH_DATABASE_URL"] = f"sqlite:///{tmp_path / 'cloud.db'}"
    if secret is not None:
        env["PLEDGEWATCH_SECRET_KEY"] = secret
    port = free_port()
    proc = subprocess.run([sys.executable, "-m", "pledgewatch", "cloud", "serve", "--port",
                           str(port)], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode != 0
    assert "PLEDGEWATCH_SECRET_KEY" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "cloud.db").exists(), "it touched the database before refusing"


@pytest.mark.parametrize("secret", ["", "   "])
def test_a_blank_secret_is_refused_too(secret: str) -> None:
    with pytest.raises(ValueError, match="SECRET_KEY"):
        CloudSettings(_env_file=None, secret_key=secret)  # type: ignore[call-arg]


def test_keygen_writes_the_private_key_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    key = tmp_path / "site" / "gw.key"
    key.parent.mkdir()
    # umask 000: a key left to the umask would come out world-readable
    proc = subprocess.run(["sh", "-c", f'umask 000 && exec "$0" -m pledgewatch edge keygen '
                                       f'"{key}"', sys.executable],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.with_name("gw.key.pub").exists()
    load_private_key(key)  # and it is the gateway's usable key
