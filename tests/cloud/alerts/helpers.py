"""A seeded world for the alert tests: two banks (alpha, beta), each with users of every role
and their tokens, a ranch and a warehouse, two loans, pledged animals and lots, weigh tickets
and positions; and small helpers to make conditions and read SSE."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from cloud.alerts import service
from cloud.alerts.models import Alert  # noqa: F401  (registers the alert tables on Base)
from cloud.alerts.runtime import stop_streams
from cloud.auth import new_token
from cloud.db.models import (
    ApiToken,
    Bank,
    Borrower,
    IngestedBatch,
    Loan,
    LoanSite,
    PledgedAnimal,
    PledgedLot,
    Position,
    Reading,
    Site,
    User,
    WeighTicket,
)
from cloud.domain.model import ALERT_KINDS, Condition
from tests.services import free_port

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
ROLES = ("viewer", "analyst", "admin")
EPCS = [f"E200001700000000000000{i:02X}" for i in range(6)]


@dataclass
class SeededBank:
    code: str
    id: int = 0
    tokens: dict[str, str] = field(default_factory=dict)  # role -> token
    emails: dict[str, str] = field(default_factory=dict)
    ranch_id: int = 0
    warehouse_id: int = 0
    loan_ids: dict[str, int] = field(default_factory=dict)  # code -> id
    site_ids: dict[str, int] = field(default_factory=dict)  # code -> id

    @property
    def ranch(self) -> str:
        return f"{self.code}-ranch"

    @property
    def loan(self) -> str:
        return f"{self.code}-L1"

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}


def seed(sessions: sessionmaker[Session]) -> dict[str, SeededBank]:
    banks: dict[str, SeededBank] = {}
    with sessions.begin() as s:
        for code in ("alpha", "beta"):
            b = SeededBank(code)
            bank = Bank(code=code, name=code.title())
            s.add(bank)
            s.flush()
            b.id = bank.id
            for role in ROLES:
                user = User(bank_id=bank.id, email=f"{role}@{code}.test", role=role)
                s.add(user)
                s.flush()
                token, prefix, digest = new_token()
                s.add(ApiToken(user_id=user.id, prefix=prefix, token_hash=digest))
                b.tokens[role] = token
                b.emails[role] = user.email
            borrower = Borrower(bank_id=bank.id, code=f"{code}-b", name="Borrower")
            s.add(borrower)
            s.flush()
            for n in (1, 2):
                loan = Loan(bank_id=bank.id, borrower_id=borrower.id, code=f"{code}-L{n}",
                            currency="USD", outstanding=Decimal("1000000"),
                            ltv_line=Decimal("0.7"), margin_call_line=Decimal("0.8"),
                            liquidation_line=Decimal("0.9"), haircut=Decimal("0.1"))
                s.add(loan)
                s.flush()
                b.loan_ids[loan.code] = loan.id
            for kind in ("ranch", "warehouse"):
                site = Site(bank_id=bank.id, code=f"{code}-{kind}", name=kind, kind=kind,
                            lat=-31.0, lon=-64.0)
                s.add(site)
                s.flush()
                b.site_ids[site.code] = site.id
                s.add(LoanSite(loan_id=b.loan_ids[b.loan], site_id=site.id))
            b.ranch_id = b.site_ids[b.ranch]
            b.warehouse_id = b.site_ids[f"{code}-warehouse"]
            for epc in EPCS:
                s.add(PledgedAnimal(loan_id=b.loan_ids[b.loan], site_id=b.ranch_id, epc=epc))
            s.add_all([
                PledgedLot(loan_id=b.loan_ids[b.loan], site_id=b.warehouse_id,
                           lot_code="LOT-A", sku="CU-1", commodity="copper_cathode",
                           quantity=Decimal("25"), unit="t"),
                PledgedLot(loan_id=b.loan_ids[b.loan], site_id=b.warehouse_id,
                           lot_code="LOT-B", sku="MZ-1", commodity="maize",
                           quantity=Decimal("5000"), unit="kg"),
                PledgedLot(loan_id=b.loan_ids[b.loan], site_id=b.warehouse_id,
                           lot_code="LOT-C", sku="MZ-2", commodity="maize",
                           quantity=Decimal("40"), unit="bag"),
            ])
            s.add_all([
                WeighTicket(site_id=b.warehouse_id, device_id="bridge", truck_id="T1",
                            direction="in", gross_kg=30_000, tare_kg=12_000, net_kg=18_000,
                            in_ms=T0, out_ms=T0 + 60_000),
                WeighTicket(site_id=b.warehouse_id, device_id="bridge", truck_id="T2",
                            direction="out", gross_kg=20_000, tare_kg=12_500, net_kg=7_500,
                            in_ms=T0 + 120_000, out_ms=T0 + 180_000),
                WeighTicket(site_id=b.warehouse_id, device_id="bridge", truck_id="T3",
                            direction="out", gross_kg=13_000, tare_kg=12_000, net_kg=1_000,
                            in_ms=T0 + 200_000, out_ms=T0 + 240_000),
            ])
            s.add_all(Position(site_id=b.warehouse_id, device_id=f"gps-{i % 2}",
                               lat=-31.0 + i / 1000, lon=-64.0, ts_ms=T0 + (i // 2) * 1000)
                      for i in range(5))  # ts pairs share a time: the cursor breaks ties
            batch = IngestedBatch(gateway_id=f"{code}-gw", seq=1, created_ms=T0,
                                  received_ms=T0, readings=3)
            s.add(batch)
            s.flush()
            # the herd fallback reads these: EPCS[0] recent, EPCS[1] 20 h before the newest
            for epc, ts in ((EPCS[0], T0 + 20 * 3_600_000), (EPCS[1], T0)):
                s.add(Reading(site_id=b.ranch_id, batch_id=batch.id, device_id="reader",
                              kind="tag_sighting", ts_ms=ts, recv_ms=ts,
                              data={"epc": epc, "count": 3}))
            s.add(Reading(site_id=b.ranch_id, batch_id=batch.id, device_id="reader",
                          kind="device_online", ts_ms=T0 + 21 * 3_600_000,
                          recv_ms=T0, data={}))
            banks[code] = b
    return banks


def cond(kind: str = "animal_missing", subject: str = EPCS[2], *, site: str | None,
         loan: str | None = None, severity: str = "high", t: int = T0,
         subject_type: str = "animal", **evidence: Any) -> Condition:
    return Condition(kind=kind, severity=severity,  # type: ignore[arg-type]
                     subject_type=subject_type, subject_id=subject, site_code=site,
                     loan_code=loan, event_time_ms=t, summary=f"{kind} {subject}",
                     evidence=dict(evidence))


def run(sessions: sessionmaker[Session], bank: SeededBank, conditions: list[Condition], *,
        now: int, site_id: int | None = -1, kinds: tuple[str, ...] = ALERT_KINDS,
        clear: int = 2, muted: frozenset[str] = frozenset()) -> service.ReconcileResult:
    """One reconcile of ``bank``'s ranch scope (or ``site_id``), committed."""
    with sessions.begin() as s:
        return service.reconcile(
            s, bank_id=bank.id, site_id=bank.ranch_id if site_id == -1 else site_id,
            scope_kinds=kinds, conditions=conditions, now_ms=now, clear_after_ticks=clear,
            site_ids=bank.site_ids, loan_ids=bank.loan_ids, muted_kinds=muted)


# -- a real uvicorn server in a thread --------------------------------------------------------


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Run ``app`` under uvicorn on a free loopback port; yields its base URL. On exit the
    SSE streams are told to stop (as ``cloud serve`` must do on SIGTERM) and the server
    shuts down gracefully."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on",
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_streams(app)
        server.should_exit = True
        thread.join(30)
        assert not thread.is_alive(), "uvicorn did not stop"


@dataclasses.dataclass(frozen=True)
class SseEvent:
    id: int
    event: str
    data: dict[str, Any]


def read_events(client: httpx.Client, url: str, n: int, *, headers: dict[str, str],
                params: dict[str, str] | None = None) -> list[SseEvent]:
    """Open the stream, read ``n`` events, close it (the server sees the disconnect)."""
    import json

    out: list[SseEvent] = []
    fields: dict[str, str] = {}
    with client.stream("GET", url, headers=headers, params=params) as resp:
        assert resp.status_code == 200, resp.read()
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if line == "":
                if "data" in fields:
                    out.append(SseEvent(int(fields["id"]), fields["event"],
                                        json.loads(fields["data"])))
                    if len(out) == n:
                        break
                fields = {}
            elif line.startswith(":"):
                continue
            else:
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
    return out
