"""The issue's "done when": a site config with one of each simulated device runs under
``pledgewatch edge run`` (a real process), and every device's data reaches the receiver."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as paho

from firmware_sim import PtyLink, SimDevice, TcpLink, device_class
from firmware_sim.toledo_scale import ToledoScale
from tests.gateway.site_helpers import write_site
from tests.receiver import receiver
from tests.services import mosquitto

# device id -> (simulator kind, driver kind, the reading kind its data arrives as)
SITE = {
    "rfid-r2000": ("r2000", "r2000", "tag_sighting"),
    "rfid-tm": ("thingmagic", "thingmagic", "tag_sighting"),
    "rfid-chafon": ("chafon", "chafon", "tag_sighting"),
    "rfid-llrp": ("llrp", "llrp", "tag_sighting"),
    "gps": ("gps", "nmea", "position"),
    "weighbridge": ("xk3190", "xk3190", "weight"),
    "toledo": ("toledo", "toledo", "weight"),
    "sics": ("toledo-sics", "mtsics", "weight"),
    "mixer": ("digistar", "digistar", "weight"),
    "feeder": ("modbus", "modbus", "weight"),
}


def _sim(kind: str, seed: int) -> SimDevice:
    if kind == "toledo-sics":
        return ToledoScale(mode="sics", seed=seed)
    return device_class(kind).demo(seed=seed)


def test_one_of_each_device_under_edge_run(tmp_path: Path) -> None:
    sims = {dev: _sim(sim_kind, i) for i, (dev, (sim_kind, _, _)) in enumerate(SITE.items())}
    links = {dev: (TcpLink(s) if SITE[dev][0] == "llrp" else PtyLink(s))
             for dev, s in sims.items()}
    for link in links.values():
        link.start()
    try:
        with receiver({}) as rec, mosquitto(tmp_path / "mq") as broker:
            devices = []
            for dev, (_, driver, _) in SITE.items():
                link = links[dev]
                port = (f"tcp://127.0.0.1:{link.port}" if isinstance(link, TcpLink)
                        else link.path)
                d: dict[str, object] = {"id": dev, "kind": driver, "port": port}
                if driver in ("xk3190", "toledo", "mtsics", "digistar", "modbus"):
                    d["options"] = {"weight_interval_s": 0}
                if driver == "toledo" or driver == "mtsics":
                    d["baudrate"] = 9600
                devices.append(d)
            devices.append({"id": "trackers", "kind": "mqtt_json", "topic": "dt/ranch-1/+/+"})
            site, pub = write_site(
                tmp_path, uplink={"kind": "http", "url": rec.url, "batch_max_age_s": 0.2},
                devices=devices, gateway={"device_broker_port": broker.port})
            rec.keys["gw-1"] = pub
            log = tmp_path / "gateway.log"
            proc = subprocess.Popen([sys.executable, "-m", "pledgewatch", "edge", "run",
                                     "--config", str(site)], stdout=subprocess.DEVNULL,
                                    stderr=log.open("wb"),
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
            want = {(dev, kind) for dev, (_, _, kind) in SITE.items()} | {
                ("truck-1", "position")}
            got: set[tuple[str, str]] = set()
            published = False
            try:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and not want <= got:
                    got = {(r.device_id, r.kind) for r in rec.readings("gw-1")}
                    if not published and ("gps", "position") in got:
                        c = paho.Client(paho.CallbackAPIVersion.VERSION2)
                        c.connect("127.0.0.1", broker.port)
                        c.loop_start()
                        c.publish("dt/ranch-1/truck-1/position",
                                  json.dumps({"lat": -19.5, "lon": 24.2}),
                                  qos=1).wait_for_publish(10)
                        c.loop_stop()
                        c.disconnect()
                        published = True
                    time.sleep(0.2)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
    finally:
        for link in links.values():
            link.close()
    assert want <= got, f"missing {sorted(want - got)}; log: {log.read_text()[-3000:]}"
    online = [r.device_id for r in rec.readings("gw-1") if r.kind == "device_online"]
    assert sorted(online) == sorted(SITE), "each device goes online exactly once"
    assert proc.returncode == 0
    assert rec.rejected == []
