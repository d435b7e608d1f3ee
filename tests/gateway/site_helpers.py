"""Build site configs and keys for gateway tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.config import SiteConfig, load_config
from gateway.keys import generate_keypair


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list | tuple):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return repr(v)


def write_site(tmp: Path, *, gateway_id: str = "gw-1", site: str = "ranch-1",
               uplink: dict[str, Any], devices: list[dict[str, Any]] = (),  # type: ignore[assignment]
               gateway: dict[str, Any] | None = None, extra: str = ""
               ) -> tuple[Path, Ed25519PublicKey]:
    key = tmp / "keys" / f"{gateway_id}.key"
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True)
        generate_keypair(key)
    from gateway.keys import load_private_key

    pub = load_private_key(key).public_key()
    lines = ["[gateway]", f"id = {toml_value(gateway_id)}", f"site = {toml_value(site)}",
             f"key_file = {toml_value(str(key))}", f"data_dir = {toml_value(str(tmp / 'data'))}",
             "http_port = 0"]
    lines += [f"{k} = {toml_value(v)}" for k, v in (gateway or {}).items()]
    lines += ["", "[uplink]"] + [f"{k} = {toml_value(v)}" for k, v in uplink.items()]
    for d in devices:
        lines += ["", "[[device]]"]
        opts = d.get("options", {})
        lines += [f"{k} = {toml_value(v)}" for k, v in d.items() if k != "options"]
        if opts:
            lines += ["[device.options]"] + [f"{k} = {toml_value(v)}" for k, v in opts.items()]
    path = tmp / "site.toml"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path, pub


def load(path: Path) -> SiteConfig:
    return load_config(path)
