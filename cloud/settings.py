"""Cloud settings, read once at start-up from the environment (prefix ``PLEDGEWATCH_``) or a
``.env`` file. Libraries never read the environment; they take these values as arguments."""

from __future__ import annotations

import socket
from typing import Annotated

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DEMO_SECRET", "CloudSettings"]

DEMO_SECRET = "demo-only-change-me"


class CloudSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PLEDGEWATCH_", env_file=".env",
                                      extra="forbid")

    database_url: str = "sqlite:///pledgewatch.db"
    demo: bool = False
    # HMAC key for webhook signatures and other server secrets; refused at its default
    # outside the demo
    secret_key: str = DEMO_SECRET
    max_body_bytes: Annotated[int, Field(gt=0)] = 4 * 1024 * 1024 + 4096
    ingest_queue_size: Annotated[int, Field(gt=0)] = 64  # batches waiting for the writer
    replay_window: Annotated[int, Field(ge=0)] = 100_000  # seqs below last_seq - window: 409
    # per API token: average requests per second and burst (429 with Retry-After beyond)
    api_rate_per_s: Annotated[float, Field(gt=0)] = 20.0
    api_burst: Annotated[int, Field(ge=1)] = 100
    # rules and valuation (cloud.domain): evaluated in the serving process every interval
    rules_enabled: bool = True
    rules_interval_s: Annotated[float, Field(gt=0)] = 2.0
    # MQTT ingest (optional): shared subscription so several cloud processes split the load
    mqtt_host: str | None = None
    mqtt_port: Annotated[int, Field(ge=1, le=65535)] = 1883
    mqtt_topic: str = "$share/pledgewatch-cloud/pledgewatch/ingest/+"
    # the MQTT client id of this process's persistent session (clean_session false): it must
    # stay the same across restarts, so a restart resumes its session instead of leaving a
    # dead one in the shared-subscription group (mosquitto keeps handing that one its share
    # of the messages), and be unique per process: two cloud processes on one host must
    # each set their own
    mqtt_client_id: str = Field(
        default_factory=lambda: f"pledgewatch-cloud-{socket.gethostname()}", min_length=1,
        max_length=256)
    # InfluxDB (optional): v1 HTTP API (``influx_v1_url``) or 2.x/3.x (``influx_url`` + token)
    influx_v1_url: str | None = None
    influx_v1_db: str = "pledgewatch"
    influx_url: str | None = None
    influx_token: str | None = None
    influx_org: str | None = None
    influx_bucket: str = "pledgewatch"

    @model_validator(mode="after")
    def _no_default_secret(self) -> CloudSettings:
        if not self.demo and (self.secret_key == DEMO_SECRET or not self.secret_key.strip()):
            raise ValueError("PLEDGEWATCH_SECRET_KEY is blank or left at its demo default; "
                             "set a real secret (or run the demo)")
        return self
