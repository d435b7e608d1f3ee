"""The dashboard in a real headless Chromium (Debian's ``/usr/bin/chromium``, driven by
Playwright) against a real ``pledgewatch cloud serve`` on SQLite: the issue's "log in, see an
alert appear, acknowledge it, see it move", plus its bad input (wrong token, a token revoked
mid-session, the API going down) and a viewer's 403.

Alerts are opened the way the domain engine opens them, through
``cloud.alerts.service.reconcile`` on the same database, so they reach the page through the
server's own SSE stream. Readings arrive through ``POST /v1/ingest`` as signed batches, so
the site panels show what the real pipeline stored.

Screenshots of every step land in ``build/screenshots/`` (gitignored); ``dashboard.png`` is
the one for the README. A missing Chromium fails the test: it is never skipped.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from playwright.sync_api import Browser, Page, expect, sync_playwright
from sqlalchemy import select

from cloud.alerts import service
from cloud.db.models import Geofence, Loan, Site
from cloud.db.session import make_engine, make_sessionmaker
from cloud.domain.model import Condition
from protocols.uplink import Batch, Reading
from tests.cloud.bank_setup import admin
from tests.cloud.test_gateway_to_cloud import Cloud
from uplink.envelope import encode_batch

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; scripts/setup-system.sh installs it
SHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"
WAIT_MS = 15_000  # longest a single step may take before the test fails
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
# markup in a summary must show up as text, never run (window.__pwned stays unset)
HOSTILE = '<img src=x onerror="window.__pwned=1">'


def _shot(page: Page, name: str, *, full: bool = False) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=full)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# -- the bank the page looks at -----------------------------------------------------------


def _keypair(tmp: Path, name: str) -> tuple[Ed25519PrivateKey, Path]:
    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    pub = tmp / f"{name}.pub"
    pub.write_text(base64.b64encode(raw).decode() + "\n")
    return key, pub


def _token(db_url: str, email: str) -> str:
    out = admin(db_url, "create-token", "--bank", "DB", email)
    match = re.search(r"pw_[0-9a-f]{8}_\S+", out)
    assert match, out
    return match.group(0)


def _epc(i: int) -> str:
    return f"E2801170{i:016X}"


def seed(tmp: Path, db_url: str) -> dict[str, Any]:
    """Bank DB: a ranch with 12 pledged animals and a warehouse with one lot, one loan over
    both, an analyst and a viewer; gateways for both sites."""
    (tmp / "sites.csv").write_text(
        "site,name,kind,lat,lon\nranch-1,Estancia Norte,ranch,-36.60,-64.30\n"
        "wh-1,Bonded warehouse,warehouse,-34.60,-58.40\n")
    (tmp / "loans.csv").write_text(
        "loan,borrower,borrower_name,currency,outstanding,ltv_line,margin_call_line,"
        "liquidation_line,haircut,sites\n"
        "L-100,B1,Agro Norte SA,USD,900000,0.70,0.80,0.90,0.10,ranch-1;wh-1\n")
    (tmp / "animals.csv").write_text("loan,site,epc\n" + "".join(
        f"L-100,ranch-1,{_epc(i)}\n" for i in range(12)))
    (tmp / "lots.csv").write_text(
        "lot,loan,site,sku,commodity,quantity,unit\nLOT-7,L-100,wh-1,SOY-1,soybean,500,t\n")
    admin(db_url, "create-bank", "DB", "--name", "Dashboard Bank")
    for what in ("sites", "loans", "animals", "lots"):
        admin(db_url, f"import-{what}", "--bank", "DB", str(tmp / f"{what}.csv"))
    admin(db_url, "create-user", "--bank", "DB", "risk@db.example", "--role", "analyst")
    admin(db_url, "create-user", "--bank", "DB", "view@db.example", "--role", "viewer")
    keys = {}
    for gw, site in (("gw-ranch", "ranch-1"), ("gw-wh", "wh-1")):
        key, pub = _keypair(tmp, gw)
        admin(db_url, "register-gateway", "--bank", "DB", "--site", site, gw,
              "--public-key-file", str(pub))
        keys[gw] = key
    return {"analyst": _token(db_url, "risk@db.example"),
            "viewer": _token(db_url, "view@db.example"), "keys": keys}


def ingest(base: str, keys: dict[str, Ed25519PrivateKey], now_ms: int) -> None:
    """One signed batch per site: tag sightings of 10 of the 12 animals and two readers'
    health at the ranch; a truck's GPS track and its weigh ticket at the warehouse."""
    ranch = [Reading("device_online", dev, now_ms - HOUR_MS, now_ms - HOUR_MS, {})
             for dev in ("gate-1", "water-2")]
    ranch += [Reading("tag_sighting", "gate-1" if i % 2 else "water-2", now_ms - i * 60_000,
                      now_ms - i * 60_000, {"epc": _epc(i), "antenna": 1, "count": 3,
                                            "first_ms": now_ms - i * 60_000 - 5000,
                                            "last_ms": now_ms - i * 60_000,
                                            "rssi_max_dbm": -61.5})
              for i in range(10)]
    ranch.append(Reading("device_offline", "bunk-3", now_ms - 2 * HOUR_MS,
                         now_ms - 2 * HOUR_MS, {"reason": "no answer"}))
    wh = [Reading("position", "truck-AB123CD", now_ms - (30 - i) * 60_000,
                  now_ms - (30 - i) * 60_000,
                  {"lat": -34.6010 + 0.00012 * i, "lon": -58.4010 + 0.00020 * i})
          for i in range(30)]
    wh.append(Reading("weigh_ticket", "bridge-1", now_ms - 40 * 60_000, now_ms - 40 * 60_000,
                      {"gross_kg": 44_180.0, "tare_kg": 14_020.0, "net_kg": 30_160.0,
                       "truck_id": "AB123CD", "in_ms": now_ms - 80 * 60_000,
                       "out_ms": now_ms - 40 * 60_000, "direction": "out"}))
    for seq, (gw, readings) in enumerate((("gw-ranch", ranch), ("gw-wh", wh)), start=1):
        envelope = encode_batch(Batch(gw, seq, now_ms, tuple(readings)), keys[gw])
        r = httpx.post(f"{base}/v1/ingest", content=envelope, timeout=10,
                       headers={"Content-Type": "application/vnd.pledgewatch.batch"})
        assert r.status_code == 200, r.text


class Engine:
    """Opens alerts and records valuations as the domain engine would, on the cloud's own
    database (the server's SSE stream polls the same ``alert_events`` table)."""

    def __init__(self, db_url: str) -> None:
        self.engine = make_engine(db_url)
        self.sessions = make_sessionmaker(self.engine)
        with self.sessions() as s:
            bank_id = s.scalar(select(Loan.bank_id).where(Loan.code == "L-100"))
            assert bank_id is not None
            self.bank_id = bank_id
            self.site_ids = {site.code: site.id for site in s.scalars(select(Site))}
            self.loan_ids = {loan.code: loan.id for loan in s.scalars(select(Loan))}
            self.loan_id = self.loan_ids["L-100"]
            # a registry row, as `pledgewatch cloud admin add-geofence` writes it
            s.add(Geofence(site_id=self.site_ids["wh-1"], name="yard", polygon={"points": [
                [-34.6015, -58.4015], [-34.6015, -58.3985], [-34.5985, -58.3985],
                [-34.5985, -58.4015]]}))
            s.commit()

    def open(self, cond: Condition, now_ms: int) -> int:
        with self.sessions() as s:
            result = service.reconcile(
                s, bank_id=self.bank_id, site_id=self.site_ids.get(cond.site_code or ""),
                scope_kinds=[cond.kind], conditions=[cond], now_ms=now_ms, clear_after_ticks=3,
                site_ids=self.site_ids, loan_ids=self.loan_ids)
            s.commit()
        assert len(result.opened) == 1, result
        return result.opened[0]

    def valuations(self, now_ms: int) -> None:
        """30 days of a slowly falling collateral value with a +-6 % band."""
        with self.sessions() as s:
            for day in range(30):
                value = 1_450_000 - day * 9_000 + (day % 5) * 6_000
                service.record_valuation(
                    s, self.loan_id, now_ms - (29 - day) * DAY_MS, value=value,
                    low=value * 0.94, high=value * 1.06, coverage=value / 900_000,
                    ltv=900_000 / value, status="ok" if 900_000 / value < 0.7 else "warning",
                    livestock=value * 0.6, inventory=value * 0.4)
            s.commit()

    def close(self) -> None:
        self.engine.dispose()


def missing_animals(now_ms: int) -> Condition:
    return Condition(
        kind="animal_missing", severity="high", subject_type="animal", subject_id=_epc(10),
        site_code="ranch-1", loan_code="L-100", event_time_ms=now_ms - 12 * HOUR_MS,
        summary=f"animal {_epc(10)} not seen for 12 h {HOSTILE}",
        evidence={"last_seen": now_ms - 13 * HOUR_MS, "readers": ["gate-1", "water-2"]})


def outbound_truck(now_ms: int) -> Condition:
    return Condition(
        kind="unauthorized_outbound", severity="critical", subject_type="truck",
        subject_id="AB123CD", site_code="wh-1", loan_code="L-100",
        event_time_ms=now_ms - 40 * 60_000,
        summary="truck AB123CD left with 30,160 kg net and no release order",
        evidence={"ticket_net_kg": 30_160, "release_orders": []})


# -- the browser ----------------------------------------------------------------------------


@pytest.fixture
def browser() -> Iterator[Browser]:
    assert CHROMIUM.exists(), (
        f"{CHROMIUM} is missing: install Debian's chromium (scripts/setup-system.sh); "
        "the dashboard test does not skip")
    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield b
        finally:
            b.close()
            expect.set_options(timeout=None)  # back to Playwright's default


def _page(browser: Browser, errors: list[str]) -> Page:
    """A page in a context of its own (its own sessionStorage: one user per page)."""
    page = browser.new_context(viewport={"width": 1440, "height": 1000}).new_page()
    page.set_default_timeout(WAIT_MS)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return page


def _login(page: Page, base: str, token: str) -> None:
    page.goto(f"{base}/")
    page.fill("#token", token)
    page.click("#login-form button[type=submit]")


def _alert_row(page: Page, alert_id: int) -> Any:
    return page.locator(f"#alerts tr[data-alert-id='{alert_id}']")


def _api_alert(base: str, token: str, alert_id: int) -> dict[str, Any]:
    r = httpx.get(f"{base}/v1/alerts/{alert_id}", timeout=10,
                  headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_dashboard_login_live_alert_acknowledge_and_bad_input(tmp_path: Path,
                                                              browser: Browser) -> None:
    db_url = f"sqlite:///{tmp_path / 'cloud.db'}"
    bank = seed(tmp_path, db_url)
    # the test plays the rules engine itself (Engine above), so the server runs none
    cloud = Cloud(tmp_path, db_url, {"PLEDGEWATCH_RULES_ENABLED": "false"})
    engine = Engine(db_url)
    errors: list[str] = []
    try:
        cloud.start()
        base = f"http://127.0.0.1:{cloud.port}"
        now = _now_ms()
        ingest(base, bank["keys"], now)
        engine.valuations(now)
        first = engine.open(missing_animals(now), now)

        # a wrong token: a clear login error from the 401, still on the login form
        page = _page(browser, errors)
        _login(page, base, "pw_00000000_not-a-real-token")
        expect(page.locator("#login-error")).to_contain_text("refused this token")
        expect(page.locator("#app")).to_be_hidden()
        _shot(page, "01-login-error")

        # the right token: the open alert is listed, its markup shown as text
        page.fill("#token", bank["analyst"])
        page.click("#login-form button[type=submit]")
        row = _alert_row(page, first)
        expect(row).to_contain_text(HOSTILE)
        expect(row).to_have_attribute("data-state", "open")
        assert page.locator("#alerts img").count() == 0
        expect(page.locator("#live")).to_have_attribute("data-state", "connected")
        expect(page.locator("#loans tr[data-loan='L-100']")).to_contain_text("900,000 USD")
        expect(page.locator("#valuation svg.chart path.band")).to_have_count(1)
        expect(page.locator("#herd .herd-present")).to_have_text("10")
        expect(page.locator("#herd .herd-pledged")).to_have_text("12")
        expect(page.locator("#devices tr[data-device='bunk-3']")).to_contain_text("offline")
        _shot(page, "02-logged-in")

        # a new alert while the page is open arrives through the SSE stream, no reload
        second = engine.open(outbound_truck(_now_ms()), _now_ms())
        expect(_alert_row(page, second)).to_contain_text("no release order")
        expect(page.locator("#alert-count")).to_have_text("(2)")
        page.locator("#site-tabs button[data-site='wh-1']").click()
        expect(page.locator("#map svg.map g.track[data-device='truck-AB123CD']")).to_have_count(1)
        expect(page.locator("#map g.fence")).to_have_count(1)  # the yard, from the positions
        expect(page.locator("#tickets")).to_contain_text("AB123CD")
        expect(page.locator("#stock")).to_contain_text("LOT-7")
        _shot(page, "03-live-alert")

        # acknowledge: the row moves to acknowledged in the page and in the API
        _alert_row(page, second).locator("button.ack").click()
        expect(_alert_row(page, second)).to_have_attribute("data-state", "acknowledged")
        expect(_alert_row(page, second).locator("button.ack")).to_have_count(0)
        api = _api_alert(base, bank["analyst"], second)
        assert api["state"] == "acknowledged"
        assert [(e["action"], e["actor"]) for e in api["audit"]][-1] == \
            ("acknowledged", "risk@db.example")
        _alert_row(page, second).click()  # detail: evidence and the audit trail
        expect(page.locator("#alert-detail")).to_contain_text("ticket_net_kg")
        expect(page.locator("#alert-detail table.audit")).to_contain_text("acknowledged")
        _shot(page, "dashboard", full=True)
        page.reload()  # the token lives in sessionStorage: a reload stays logged in
        expect(_alert_row(page, second)).to_have_attribute("data-state", "acknowledged")

        # a viewer may look but not resolve: a clear 403 message, nothing changes
        # (logged in by a link with the token in its fragment, wiped from the address bar)
        viewer = _page(browser, errors)
        viewer.goto(f"{base}/dashboard/#token={bank['viewer']}")
        _alert_row(viewer, first).locator("button.resolve").click()
        assert bank["viewer"] not in viewer.url
        expect(viewer.locator("#notice")).to_contain_text("may not resolve")
        expect(viewer.locator("#notice")).to_contain_text("analyst role")
        assert _api_alert(base, bank["analyst"], first)["state"] == "open"
        _shot(viewer, "04-viewer-forbidden")

        # the viewer's token is revoked mid-session: the next call sends them to login
        admin(db_url, "revoke-token", bank["viewer"])
        _alert_row(viewer, first).locator("button.resolve").click()
        expect(viewer.locator("#login-error")).to_contain_text("session has ended")
        expect(viewer.locator("#app")).to_be_hidden()
        expect(viewer.locator("tr[data-alert-id]")).to_have_count(0)  # nothing left behind
        assert viewer.evaluate("sessionStorage.length") == 0
        _shot(viewer, "05-session-ended")

        # the API goes away: a banner with the retry countdown, the last data stays
        cloud.kill9()
        banner = page.locator("#banner")
        expect(banner).to_be_visible()
        expect(banner).to_have_text(re.compile(r"API unreachable, retrying (in \d+s|now)"))
        expect(_alert_row(page, first)).to_be_visible()
        _shot(page, "06-api-down")

        # it comes back on the same port: the banner goes, the live stream resumes
        cloud.start()
        expect(banner).to_be_hidden(timeout=2 * WAIT_MS)
        expect(page.locator("#live")).to_have_attribute("data-state", "connected")
        expect(_alert_row(page, first)).to_be_visible()
        assert page.evaluate("window.__pwned") is None
        assert errors == []
    finally:
        for context in browser.contexts:  # end the SSE streams before stopping the server
            context.close()
        cloud.stop()
        engine.close()
