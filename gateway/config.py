"""The site configuration of a gateway (``pledgewatch edge run --config site.toml``).

Validated at start by pydantic; every problem is reported as one line naming the file, the
key and the problem, and the gateway does not start. Example: ``docs/gateway.md``.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = ["ConfigError", "DeviceConfig", "GatewayConfig", "SiteConfig", "UplinkConfig",
           "load_config"]

DEVICE_KINDS = ("r2000", "thingmagic", "chafon", "llrp", "nmea", "xk3190", "toledo", "mtsics",
                "digistar", "modbus", "mqtt_json")


class ConfigError(Exception):
    """The configuration is unusable. ``problems`` holds one line per problem."""

    def __init__(self, path: Path | str, problems: list[str]) -> None:
        self.path = str(path)
        self.problems = problems
        super().__init__("\n".join(problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GatewayConfig(_Strict):
    id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
    site: Annotated[str, Field(min_length=1, max_length=64)]
    key_file: Path
    data_dir: Path = Path("data")
    disk_budget_mb: Annotated[float, Field(gt=0)] = 512.0
    http_host: str = "127.0.0.1"
    http_port: Annotated[int, Field(ge=0, le=65535)] = 9108
    # the site's MQTT broker that mqtt_json devices publish to (may be the uplink broker)
    device_broker_host: str = "127.0.0.1"
    device_broker_port: Annotated[int, Field(ge=1, le=65535)] = 1883


class UplinkConfig(_Strict):
    kind: Literal["http", "mqtt"] = "http"
    url: str | None = None  # http: the cloud's ingest URL
    mqtt_host: str = "127.0.0.1"
    mqtt_port: Annotated[int, Field(ge=1, le=65535)] = 1883
    mqtt_topic: str = "pledgewatch/ingest/{gateway_id}"
    batch_max_readings: Annotated[int, Field(ge=1, le=50_000)] = 1000
    batch_max_bytes: Annotated[int, Field(ge=1024)] = 1_000_000
    batch_max_age_s: Annotated[float, Field(gt=0)] = 5.0
    # a heartbeat reading when nothing else was stored for this long (the cloud raises
    # site_offline after 30 min without uploads)
    heartbeat_s: Annotated[float, Field(gt=0)] = 60.0
    timeout_s: Annotated[float, Field(gt=0)] = 15.0
    backoff_base_s: Annotated[float, Field(gt=0)] = 0.5
    backoff_cap_s: Annotated[float, Field(gt=0)] = 60.0

    @model_validator(mode="after")
    def _needs_url(self) -> UplinkConfig:
        if self.kind == "http" and not self.url:
            raise ValueError("uplink.kind = 'http' needs uplink.url (the cloud ingest URL)")
        return self


class DeviceConfig(_Strict):
    id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
    kind: Literal["r2000", "thingmagic", "chafon", "llrp", "nmea", "xk3190", "toledo",
                  "mtsics", "digistar", "modbus", "mqtt_json"]
    # serial device path / pyserial URL, or tcp://host:port; mqtt_json uses topic instead
    port: str | None = None
    baudrate: Annotated[int, Field(ge=300, le=4_000_000)] = 115200
    bytesize: Literal[7, 8] = 8
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    topic: str | None = None  # mqtt_json: subscription filter
    silence_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    # weighbridges (xk3190, toledo, mtsics): the id of the RFID reader at the scale whose
    # tag sightings identify the truck being weighed
    truck_reader: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)  # kind-specific, see docs

    @model_validator(mode="after")
    def _needs_port(self) -> DeviceConfig:
        if self.kind == "mqtt_json":
            if not self.topic:
                raise ValueError(f"device {self.id!r} of kind mqtt_json needs a topic")
        elif not self.port:
            raise ValueError(f"device {self.id!r} of kind {self.kind} needs a port "
                             "(e.g. /dev/ttyUSB0, socket://host:port or tcp://host:port)")
        return self


class SiteConfig(_Strict):
    gateway: GatewayConfig
    uplink: UplinkConfig
    device: list[DeviceConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_ids(self) -> SiteConfig:
        seen: set[str] = set()
        ports: dict[str, str] = {}
        for d in self.device:
            if d.id in seen:
                raise ValueError(f"device id {d.id!r} is used twice")
            seen.add(d.id)
            if d.truck_reader is not None and d.kind not in ("xk3190", "toledo", "mtsics"):
                raise ValueError(f"device {d.id!r}: truck_reader is only for weighbridges "
                                 "(xk3190, toledo, mtsics)")
            if d.port:
                if d.port in ports:
                    raise ValueError(f"port {d.port!r} is claimed by devices {ports[d.port]!r} "
                                     f"and {d.id!r}; one port has one owner")
                ports[d.port] = d.id
        for d in self.device:
            if d.truck_reader is not None and d.truck_reader not in seen:
                raise ValueError(f"device {d.id!r}: truck_reader {d.truck_reader!r} is not a "
                                 "device of this site")
        return self

    def resolve(self, base: Path) -> SiteConfig:
        """Make relative paths relative to the config file's folder."""
        gw = self.gateway
        upd: dict[str, Any] = {}
        if not gw.key_file.is_absolute():
            upd["key_file"] = base / gw.key_file
        if not gw.data_dir.is_absolute():
            upd["data_dir"] = base / gw.data_dir
        return self.model_copy(update={"gateway": gw.model_copy(update=upd)})


def _loc(loc: tuple[int | str, ...], raw: dict[str, Any]) -> str:
    parts: list[str] = []
    node: Any = raw
    for p in loc:
        if isinstance(p, int) and parts:
            ident = ""
            if isinstance(node, list) and p < len(node) and isinstance(node[p], dict):
                ident = node[p].get("id", "")
            parts[-1] += f"[{p}]" + (f"(id={ident})" if ident else "")
            node = node[p] if isinstance(node, list) and p < len(node) else None
        else:
            parts.append(str(p))
            node = node.get(p) if isinstance(node, dict) else None
    return ".".join(parts) or "(top level)"


def load_config(path: Path | str) -> SiteConfig:
    """Read and validate a site TOML file; raises :class:`ConfigError` listing every problem."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(path, [f"{path}: file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, [f"{path}: cannot read: {exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, [f"{path}: not valid TOML: {exc}"]) from None
    try:
        cfg = SiteConfig.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for e in exc.errors():
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] == "extra_forbidden":
                msg = "unknown key"
            elif e["type"] == "missing":
                msg = "required key is missing"
            problems.append(f"{path}: {_loc(e['loc'], raw)}: {msg}")
        raise ConfigError(path, problems) from None
    cfg = cfg.resolve(path.parent)
    key = cfg.gateway.key_file
    if not key.exists():
        raise ConfigError(path, [f"{path}: gateway.key_file: {key} does not exist "
                                 f"(create it with: pledgewatch edge keygen {key})"])
    if not key.is_file():
        raise ConfigError(path, [f"{path}: gateway.key_file: {key} is not a file"])
    return cfg
