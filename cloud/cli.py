"""``pledgewatch cloud admin ...``: set up banks, users, tokens, gateways, geofences and the
registry.

Wired into the ``pledgewatch`` parser by :func:`add_cloud_parser`. Every command takes
``--database-url`` (default: ``PLEDGEWATCH_DATABASE_URL``, read here and nowhere else, then
``sqlite:///pledgewatch.db``), creates missing tables, runs in one transaction and prints only
after it committed. Exit codes: 0 done, 1 refused (bad CSV, unknown bank, bad key ...),
2 usage error. Commands get ``(namespace, out, err, stdin)`` and return the exit code.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO

from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from cloud.admin import service
from cloud.admin.csv_import import COLUMNS, IMPORTERS, CsvImportError
from cloud.auth import ROLES
from cloud.db.models import Base
from cloud.db.session import make_engine, make_sessionmaker, session_scope
from cloud.errors import CloudError

__all__ = ["add_admin_parser", "add_cloud_parser", "ensure_schema"]

EXIT_OK: Final = 0
EXIT_REFUSED: Final = 1
EXIT_USAGE: Final = 2
LIST_KINDS: Final = ("banks", "users", "tokens", "gateways", "sites", "loans")
MAX_KEY_FILE_BYTES: Final = 4096
_NEGATIVE_NUMBER_START: Final = re.compile(r"^-\.?\d")

Command = Callable[[argparse.Namespace, TextIO, TextIO, TextIO], int]


class _DatabaseSettings(BaseSettings):
    """Only what the admin commands need (not :class:`cloud.settings.CloudSettings`, which
    also insists on a server secret the admin commands never use)."""

    model_config = SettingsConfigDict(env_prefix="PLEDGEWATCH_", env_file=".env",
                                      extra="ignore")
    database_url: str = "sqlite:///pledgewatch.db"


@dataclass
class _Done:
    """What a command prints once its transaction has committed."""

    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)


def ensure_schema(engine: Engine) -> None:
    """Bring the schema up to date: alembic migrations when the project has them
    (``cloud.db.migrate.upgrade``), else create the missing tables."""
    try:
        migrate: Any = importlib.import_module("cloud.db.migrate")
    except ModuleNotFoundError as exc:
        if exc.name != "cloud.db.migrate":
            raise
        Base.metadata.create_all(engine)
        return
    migrate.upgrade(engine.url.render_as_string(hide_password=False))


def _run(ns: argparse.Namespace, out: TextIO, err: TextIO,
         action: Callable[[Session], _Done]) -> int:
    url = ns.database_url or _DatabaseSettings().database_url
    name = f"pledgewatch cloud admin {ns.admin_command}"
    try:
        engine = make_engine(url)
    except (SQLAlchemyError, ValueError, ImportError) as exc:
        err.write(f"{name}: bad database URL: {exc}\n")
        return EXIT_USAGE
    shown = engine.url.render_as_string(hide_password=True)
    try:
        ensure_schema(engine)
        with session_scope(make_sessionmaker(engine)) as session:
            done = action(session)
    except CsvImportError as exc:
        for problem in [*exc.errors, *exc.warnings]:
            err.write(f"{problem}\n")
        err.write(f"{exc}\n")
        return EXIT_REFUSED
    except CloudError as exc:  # AdminError, MigrationError
        err.write(f"{name}: {exc}\n")
        return EXIT_REFUSED
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        err.write(f"{name}: database {shown}: {reason}\n")
        return EXIT_REFUSED
    finally:
        engine.dispose()
    for line in done.out:
        out.write(line + "\n")
    for line in done.err:
        err.write(line + "\n")
    return EXIT_OK


def _when(value: dt.datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%dT%H:%M:%SZ")


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    cells = [[str(c) for c in header], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in cells]


# -- commands --------------------------------------------------------------------------------
def cmd_create_bank(ns: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    def act(s: Session) -> _Done:
        bank = service.create_bank(s, code=ns.code, name=ns.name)
        return _Done(out=[f"bank {bank.code} created ({bank.name})"])
    return _run(ns, out, err, act)


def cmd_create_user(ns: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    def act(s: Session) -> _Done:
        user = service.create_user(s, bank_code=ns.bank, email=ns.email, role=ns.role)
        return _Done(out=[f"user {user.email} ({user.role}) created in bank {ns.bank}"])
    return _run(ns, out, err, act)


def cmd_create_token(ns: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    def act(s: Session) -> _Done:
        token, row = service.create_token(s, bank_code=ns.bank, email=ns.email,
                                          expires_days=ns.expires_days)
        return _Done(out=[token], err=[
            f"token {row.prefix} for {ns.email.lower()} in bank {ns.bank}, expires "
            f"{_when(row.expires_at) if row.expires_at else 'never'}. It is shown only now: "
            "store it; the database keeps only its hash."])
    return _run(ns, out, err, act)


def cmd_revoke_token(ns: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    def act(s: Session) -> _Done:
        row, was_active = service.revoke_token(s, ns.prefix)
        return _Done(out=[f"token {row.prefix} revoked" if was_active
                          else f"token {row.prefix} was already revoked"])
    return _run(ns, out, err, act)


def _public_key(ns: argparse.Namespace) -> bytes:
    if ns.public_key_file is not None:
        path: Path = ns.public_key_file
        try:
            with path.open("rb") as f:
                data = f.read(MAX_KEY_FILE_BYTES + 1)
        except OSError as exc:
            raise service.AdminError(f"{path}: cannot read: {exc.strerror or exc}",
                                     reason="invalid") from None
        if len(data) > MAX_KEY_FILE_BYTES or b"PRIVATE KEY" in data:
            raise service.AdminError(f"{path}: not a public key file (give the KEY.pub that "
                                     "`pledgewatch edge keygen` wrote)", reason="invalid")
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            raise service.AdminError(f"{path}: not a base64 public key", reason="invalid") \
                from None
        try:
            return service.parse_public_key(text)
        except service.AdminError as exc:
            raise service.AdminError(f"{path}: {exc}", reason=exc.reason) from None
    return service.parse_public_key(ns.public_key)


def cmd_register_gateway(ns: argparse.Namespace, out: TextIO, err: TextIO,
                         stdin: TextIO) -> int:
    def act(s: Session) -> _Done:
        key = _public_key(ns)
        gw = service.register_gateway(s, bank_code=ns.bank, site_code=ns.site,
                                      gateway_id=ns.gateway_id, public_key=key)
        return _Done(out=[f"gateway {gw.gateway_id} registered at site {ns.site} of bank "
                          f"{ns.bank}"])
    return _run(ns, out, err, act)


def cmd_disable_gateway(ns: argparse.Namespace, out: TextIO, err: TextIO,
                        stdin: TextIO) -> int:
    def act(s: Session) -> _Done:
        gw, was_enabled = service.disable_gateway(s, ns.gateway_id)
        return _Done(out=[f"gateway {gw.gateway_id} disabled" if was_enabled
                          else f"gateway {gw.gateway_id} was already disabled"])
    return _run(ns, out, err, act)


def _import_command(kind: str) -> Command:
    def cmd(ns: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
        def act(s: Session) -> _Done:
            result = IMPORTERS[kind](s, bank_code=ns.bank, path=ns.file, display=str(ns.file))
            extra = (f" and {result.borrowers_created} borrowers" if kind == "loans" else "")
            return _Done(out=[f"imported {result.created} {kind}{extra} from {ns.file}"],
                         err=[str(w) for w in result.warnings])
        return _run(ns, out, err, act)
    return cmd


def _instant_ms(text: str) -> int:
    """``2025-03-01`` (00:00 UTC) or an ISO 8601 time with an offset -> Unix ms."""
    try:
        if len(text) == 10:
            d = dt.date.fromisoformat(text)
            when = dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC)
        else:
            when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not YYYY-MM-DD or an ISO 8601 time")\
            from None
    if when.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no UTC offset (add Z or +hh:mm)")
    return int(when.timestamp() * 1000)


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"{n} must be > 0")
    return n


def cmd_add_release_order(ns: argparse.Namespace, out: TextIO, err: TextIO,
                          stdin: TextIO) -> int:
    def act(s: Session) -> _Done:
        order = service.add_release_order(
            s, bank_code=ns.bank, site_code=ns.site, lot_code=ns.lot, truck_id=ns.truck,
            quantity_kg=ns.quantity_kg, valid_from_ms=ns.valid_from, valid_to_ms=ns.valid_to,
            reference=ns.reference)
        return _Done(out=[f"release order {order.id} recorded: {order.quantity_kg} kg from "
                          f"site {ns.site}" + (f" lot {ns.lot}" if ns.lot else "")])
    return _run(ns, out, err, act)


def cmd_add_price(ns: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    def act(s: Session) -> _Done:
        p = service.add_price(s, bank_code=ns.bank, commodity=ns.commodity, price=ns.price,
                              unit=ns.unit, currency=ns.currency, as_of=ns.date,
                              source=ns.source)
        return _Done(out=[f"price recorded: {p.commodity} {p.price} {p.currency}/{p.unit} "
                          f"as of {p.as_of.isoformat()}"])
    return _run(ns, out, err, act)


def cmd_add_geofence(ns: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    def act(s: Session) -> _Done:
        fence = service.add_geofence(s, bank_code=ns.bank, site_code=ns.site, name=ns.name,
                                     points=service.parse_points(ns.points))
        n = len(fence.polygon["points"])
        return _Done(out=[f"geofence {fence.name!r} ({n} points) added to site {ns.site} of "
                          f"bank {ns.bank}"])
    return _run(ns, out, err, act)


def cmd_remove_geofence(ns: argparse.Namespace, out: TextIO, err: TextIO,
                        stdin: TextIO) -> int:
    def act(s: Session) -> _Done:
        service.remove_geofence(s, bank_code=ns.bank, site_code=ns.site, name=ns.name)
        return _Done(out=[f"geofence {ns.name.strip()!r} removed from site {ns.site} of bank "
                          f"{ns.bank}"])
    return _run(ns, out, err, act)


def cmd_list_geofences(ns: argparse.Namespace, out: TextIO, err: TextIO,
                       stdin: TextIO) -> int:
    def act(s: Session) -> _Done:
        fences = service.list_geofences(s, bank_code=ns.bank, site_code=ns.site)
        return _Done(out=_table(("SITE", "NAME", "N", "POINTS"),
                                [(f.site, f.name, len(f.points), service.format_points(f.points))
                                 for f in fences]))
    return _run(ns, out, err, act)


def cmd_list(ns: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    if ns.kind != "banks" and not ns.bank:
        err.write(f"pledgewatch cloud admin list {ns.kind}: --bank CODE is required\n")
        return EXIT_USAGE

    def act(s: Session) -> _Done:
        rows: list[Sequence[object]]
        if ns.kind == "banks":
            header: Sequence[str] = ("CODE", "NAME")
            rows = [(b.code, b.name) for b in service.list_banks(s)]
        elif ns.kind == "users":
            header = ("EMAIL", "ROLE", "DISABLED")
            rows = [(u.email, u.role, "yes" if u.disabled else "no")
                    for u in service.list_users(s, bank_code=ns.bank)]
        elif ns.kind == "tokens":
            header = ("PREFIX", "EMAIL", "ROLE", "CREATED", "EXPIRES", "REVOKED")
            rows = [(t.prefix, t.email, t.role, _when(t.created_at), _when(t.expires_at),
                     "yes" if t.revoked else "no")
                    for t in service.list_tokens(s, bank_code=ns.bank)]
        elif ns.kind == "gateways":
            header = ("GATEWAY", "SITE", "DISABLED", "LAST_SEQ")
            rows = [(g.gateway_id, g.site, "yes" if g.disabled else "no", g.last_seq)
                    for g in service.list_gateways(s, bank_code=ns.bank)]
        elif ns.kind == "sites":
            header = ("SITE", "KIND", "ANIMALS", "LOTS", "NAME")
            rows = [(x.code, x.kind, x.animals, x.lots, x.name)
                    for x in service.list_sites(s, bank_code=ns.bank)]
        else:
            header = ("LOAN", "BORROWER", "CURRENCY", "OUTSTANDING", "SITES")
            rows = [(x.code, x.borrower, x.currency, x.outstanding, ";".join(x.sites) or "-")
                    for x in service.list_loans(s, bank_code=ns.bank)]
        return _Done(out=_table(header, rows))
    return _run(ns, out, err, act)


# -- parser ----------------------------------------------------------------------------------
def _help_of(parser: argparse.ArgumentParser) -> Command:
    def cmd(ns: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
        parser.print_help(err)
        return EXIT_USAGE
    return cmd


def add_cloud_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``cloud`` (with ``admin ...``) to the ``pledgewatch`` subcommands. Other cloud
    subcommands (``serve``) can be added beside ``admin`` through :func:`add_admin_parser`'s
    sibling ``cloud`` parser; see the lead's wiring in ``pledgewatch/cli.py``."""
    cloud = subparsers.add_parser("cloud", help="the cloud: admin commands")
    csub = cloud.add_subparsers(dest="cloud_command", metavar="CLOUDCOMMAND")
    cloud.set_defaults(func=_help_of(cloud))
    add_admin_parser(csub)


def add_admin_parser(cloud_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``admin`` and its commands under an existing ``cloud`` subparser set."""
    db = argparse.ArgumentParser(add_help=False)
    db.add_argument("--database-url", metavar="URL",
                    help="sqlite:///FILE.db or postgresql+psycopg://USER@HOST/DB (default: "
                         "$PLEDGEWATCH_DATABASE_URL, else sqlite:///pledgewatch.db)")
    bank = argparse.ArgumentParser(add_help=False)
    bank.add_argument("--bank", required=True, metavar="CODE", help="the bank's code")

    admin = cloud_sub.add_parser(
        "admin", help="set up banks, users, tokens, gateways; import loans, sites, animals, "
                      "lots", description="Registry administration. Exit 0 done, 1 refused "
                      "(nothing changed), 2 usage error. See docs/admin.md.")
    admin.set_defaults(func=_help_of(admin))
    a = admin.add_subparsers(dest="admin_command", metavar="ADMINCOMMAND")

    p = a.add_parser("create-bank", parents=[db], help="create a bank (tenant)")
    p.add_argument("code", metavar="CODE")
    p.add_argument("--name", required=True)
    p.set_defaults(func=cmd_create_bank)

    p = a.add_parser("create-user", parents=[db, bank], help="add a user to a bank")
    p.add_argument("email", metavar="EMAIL")
    p.add_argument("--role", required=True, choices=ROLES)
    p.set_defaults(func=cmd_create_user)

    p = a.add_parser("create-token", parents=[db, bank],
                     help="make an API token for a user (printed once; only its hash is kept)")
    p.add_argument("email", metavar="EMAIL")
    p.add_argument("--expires-days", type=_positive_int, metavar="N")
    p.set_defaults(func=cmd_create_token)

    p = a.add_parser("revoke-token", parents=[db], help="revoke a token by its prefix")
    p.add_argument("prefix", metavar="PREFIX", help="the 8 hex digits after pw_, or the token")
    p.set_defaults(func=cmd_revoke_token)

    p = a.add_parser("register-gateway", parents=[db, bank],
                     help="register a site gateway and its Ed25519 public key")
    p.add_argument("gateway_id", metavar="GATEWAY_ID")
    p.add_argument("--site", required=True, metavar="SITE")
    key = p.add_mutually_exclusive_group(required=True)
    key.add_argument("--public-key", metavar="B64", help="as printed by `pledgewatch edge "
                                                         "keygen`")
    key.add_argument("--public-key-file", type=Path, metavar="KEY.pub",
                     help="the .pub file `pledgewatch edge keygen` wrote")
    p.set_defaults(func=cmd_register_gateway)

    p = a.add_parser("disable-gateway", parents=[db],
                     help="refuse all further batches from a gateway")
    p.add_argument("gateway_id", metavar="GATEWAY_ID")
    p.set_defaults(func=cmd_disable_gateway)

    for kind in ("sites", "loans", "animals", "lots"):
        required, optional = COLUMNS[kind]
        p = a.add_parser(f"import-{kind}", parents=[db, bank],
                         help=f"import {kind} from CSV (all rows or none)",
                         description=f"Columns: {', '.join(required)} (required); "
                                     f"{', '.join(optional)} (optional).")
        p.add_argument("file", type=Path, metavar=f"{kind.upper()}.csv")
        p.set_defaults(func=_import_command(kind))

    p = a.add_parser("add-release-order", parents=[db, bank],
                     help="record a release order (goods allowed out of a warehouse)")
    p.add_argument("--site", required=True, metavar="SITE")
    p.add_argument("--lot", metavar="LOT")
    p.add_argument("--truck", metavar="TRUCK_ID")
    p.add_argument("--quantity-kg", required=True, metavar="KG")
    p.add_argument("--valid-from", required=True, type=_instant_ms, metavar="WHEN",
                   help="YYYY-MM-DD (00:00 UTC) or ISO 8601 time with offset")
    p.add_argument("--valid-to", required=True, type=_instant_ms, metavar="WHEN")
    p.add_argument("--reference", metavar="REF")
    p.set_defaults(func=cmd_add_release_order)

    p = a.add_parser("add-price", parents=[db, bank], help="record a commodity price quote")
    p.add_argument("--commodity", required=True, metavar="C", help="e.g. cattle_live")
    p.add_argument("--price", required=True, metavar="P")
    p.add_argument("--unit", required=True, choices=service.PRICE_UNITS)
    p.add_argument("--currency", required=True, metavar="XXX")
    p.add_argument("--date", required=True, type=_date, metavar="YYYY-MM-DD")
    p.add_argument("--source", metavar="TEXT")
    p.set_defaults(func=cmd_add_price)

    p = a.add_parser("add-geofence", parents=[db, bank],
                     help="draw a named geofence polygon around a site (a tracker outside "
                          "every fence of its site raises geofence_exit)")
    p.add_argument("name", metavar="NAME", help="unique per site, e.g. yard")
    p.add_argument("--site", required=True, metavar="SITE")
    p.add_argument("--points", required=True, metavar="LAT,LON;LAT,LON;...",
                   help="at least 3 vertices in decimal degrees (WGS84), in order around the "
                        "polygon; it closes itself")
    # Southern and western sites start with a minus: "-34.6,-58.4;..." must be a value, not
    # an unknown option. This parser has no option that looks like a number, so an argument
    # that starts like a negative number is always a value (what Python 3.12's argparse does
    # for any parser; 3.11 only knows plain numbers such as -34.6).
    p._negative_number_matcher = _NEGATIVE_NUMBER_START
    p.set_defaults(func=cmd_add_geofence)

    p = a.add_parser("remove-geofence", parents=[db, bank], help="remove a site's geofence")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--site", required=True, metavar="SITE")
    p.set_defaults(func=cmd_remove_geofence)

    p = a.add_parser("list-geofences", parents=[db, bank],
                     help="list a bank's geofences (one site's with --site)")
    p.add_argument("--site", metavar="SITE")
    p.set_defaults(func=cmd_list_geofences)

    p = a.add_parser("list", parents=[db], help="list banks, or a bank's users, tokens, "
                                                "gateways, sites, loans")
    p.add_argument("kind", choices=LIST_KINDS)
    p.add_argument("--bank", metavar="CODE")
    p.set_defaults(func=cmd_list)
