"""Per-token rate limit: beyond its burst a token gets 429 with Retry-After; other tokens
and, after waiting, the same token go on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from cloud.api.app import create_app
from cloud.ratelimit import TokenBuckets
from cloud.settings import CloudSettings
from tests.cloud.bank_setup import admin


def _token(db_url: str, email: str) -> str:
    admin(db_url, "create-user", "--bank", "TB", email, "--role", "viewer")
    out = admin(db_url, "create-token", "--bank", "TB", email)
    return next(w for w in out.split() if w.startswith("pw_"))


def test_a_token_beyond_its_burst_gets_429_and_others_do_not(tmp_path: Path) -> None:
    settings = CloudSettings(_env_file=None,  # type: ignore[call-arg]
                             database_url=f"sqlite:///{tmp_path / 'c.db'}",
                             secret_key="test-secret-not-the-default", rules_enabled=False,
                             api_rate_per_s=0.01, api_burst=5)
    app = create_app(settings)
    with TestClient(app) as client:
        admin(settings.database_url, "create-bank", "TB", "--name", "Test Bank")
        a, b = _token(settings.database_url, "a@tb.example"), _token(settings.database_url,
                                                                         "b@tb.example")

        def get(token: str) -> Any:
            return client.get("/v1/sites", headers={"Authorization": f"Bearer {token}"})

        assert [get(a).status_code for _ in range(5)] == [200] * 5
        refused = get(a)
        assert refused.status_code == 429
        assert refused.json()["reason"] == "rate_limited"
        assert int(refused.headers["Retry-After"]) >= 1
        assert get(b).status_code == 200  # another token has its own bucket
        # a bad token is refused as unauthorised, not counted against anyone
        assert client.get("/v1/sites", headers={"Authorization": "Bearer pw_x_y"}
                          ).status_code == 401
        assert app.state.rate_limit.limited == 1


def test_token_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    buckets = TokenBuckets(2.0, 3, clock=lambda: now[0])
    assert [buckets.take(1) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = buckets.take(1)
    assert wait == 0.5  # one token at 2 per second
    now[0] += 0.5
    assert buckets.take(1) == 0.0
    assert buckets.take(1) > 0
    now[0] += 10.0  # refills to the burst, not beyond
    assert [buckets.take(1) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take(1) > 0
    assert buckets.limited == 3
