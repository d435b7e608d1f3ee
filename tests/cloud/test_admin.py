"""``pledgewatch cloud admin ...`` run in-process against a SQLite file: every command, its
exit code, what it wrote, and the example sequence of ``examples/README.md`` end to end."""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import io
import re
import runpy
import shlex
import shutil
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cloud.cli import add_cloud_parser
from cloud.db import models
from cloud.db.session import make_engine
from cloud.domain import rules
from cloud.domain.registry import load_sites
from firmware_sim.r2000_reader import herd_tags
from gateway.keys import generate_keypair, public_key_b64

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def run(*argv: str) -> tuple[int, str, str]:
    """Parse and dispatch as ``pledgewatch`` does (argparse usage errors exit 2)."""
    parser = argparse.ArgumentParser(prog="pledgewatch")
    add_cloud_parser(parser.add_subparsers(dest="command"))
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            ns = parser.parse_args(list(argv))
    except SystemExit as exc:
        return (2 if exc.code else 0), out.getvalue(), err.getvalue()
    code = ns.func(ns, out, err, io.StringIO())
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'admin.db'}"


def admin(url: str, *argv: str) -> tuple[int, str, str]:
    return run("cloud", "admin", argv[0], "--database-url", url, *argv[1:])


M = TypeVar("M", bound=models.Base)


def rows(url: str, model: type[M]) -> list[M]:
    engine = make_engine(url)
    try:
        with Session(engine) as s:
            return list(s.scalars(select(model)))
    finally:
        engine.dispose()


def count(url: str, model: type[models.Base]) -> int:
    engine = make_engine(url)
    try:
        with Session(engine) as s:
            return int(s.scalar(select(func.count()).select_from(model)) or 0)
    finally:
        engine.dispose()


@pytest.fixture
def demo(url: str, tmp_path: Path) -> str:
    """Bank DEMO with the example sites and loans and a user."""
    assert admin(url, "create-bank", "DEMO", "--name", "Demo Bank")[0] == 0
    assert admin(url, "import-sites", "--bank", "DEMO", str(EXAMPLES / "sites.csv"))[0] == 0
    assert admin(url, "import-loans", "--bank", "DEMO", str(EXAMPLES / "loans.csv"))[0] == 0
    assert admin(url, "create-user", "--bank", "DEMO", "Risk@Demo.example", "--role",
                 "analyst")[0] == 0
    return url


# -- the examples ----------------------------------------------------------------------------
def _readme_commands() -> list[str]:
    text = (EXAMPLES / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text, re.S)
    assert block is not None
    return [ln for ln in block.group(1).splitlines() if ln.strip()]


def test_example_readme_sequence_sets_up_the_bank(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Every command of examples/README.md, in order, from a fresh directory."""
    shutil.copytree(EXAMPLES, tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    lines = _readme_commands()
    assert lines[0].startswith("export PLEDGEWATCH_DATABASE_URL=sqlite:///")
    monkeypatch.setenv("PLEDGEWATCH_DATABASE_URL", lines[0].split("=", 1)[1])
    tokens: list[str] = []
    for line in lines[1:]:
        argv = shlex.split(line)
        assert argv[0] == "pledgewatch"
        if argv[1:3] == ["edge", "keygen"]:  # the gateway's command, not the cloud's
            generate_keypair(tmp_path / argv[3])
            continue
        code, out, err = run(*argv[1:])
        assert code == 0, f"{line}\n{err}"
        if argv[3] == "create-token":
            tokens.append(out.strip())
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    assert {m.__tablename__: count(url, m) for m in (
        models.Bank, models.User, models.ApiToken, models.Site, models.Loan, models.Borrower,
        models.PledgedAnimal, models.PledgedLot, models.Gateway, models.Price,
        models.ReleaseOrder)} == {
        "banks": 1, "users": 1, "api_tokens": 1, "sites": 2, "loans": 2, "borrowers": 2,
        "pledged_animals": 1000, "pledged_lots": 40, "gateways": 1, "prices": 2,
        "release_orders": 1}
    assert len(tokens) == 1 and tokens[0].startswith("pw_")
    code, out, _ = run("cloud", "admin", "list", "sites", "--bank", "DEMO")
    assert code == 0
    assert out.splitlines()[1:] == [
        "RANCH-1  ranch      1000     0     Estancia La Pampa",
        "WH-1     warehouse  0        40    Rosario bonded warehouse"]


def test_example_animals_are_the_simulated_herd() -> None:
    """The pledged EPCs are exactly the tags the simulated reader of the demo reports."""
    epcs = [ln.split(",")[0] for ln in (EXAMPLES / "animals.csv").read_text().splitlines()[1:]]
    assert epcs == [t.epc.hex().upper() for t in herd_tags(1000, seed=1)]


def test_example_files_are_what_the_script_makes(tmp_path: Path) -> None:
    script = runpy.run_path(str(EXAMPLES / "make_examples.py"))
    written = script["write_examples"](tmp_path)
    assert sorted(p.name for p in written) == ["animals.csv", "loans.csv", "lots.csv",
                                               "sites.csv"]
    for p in written:
        assert p.read_bytes() == (EXAMPLES / p.name).read_bytes(), p.name
    assert len((EXAMPLES / "lots.csv").read_text().splitlines()) == 41


# -- banks and users -------------------------------------------------------------------------
def test_create_bank(url: str) -> None:
    assert admin(url, "create-bank", "DEMO", "--name", "Demo Bank") == (
        0, "bank DEMO created (Demo Bank)\n", "")
    code, out, err = admin(url, "create-bank", "DEMO", "--name", "Again")
    assert (code, out) == (1, "")
    assert err == "pledgewatch cloud admin create-bank: bank 'DEMO' already exists\n"
    assert admin(url, "create-bank", "bad code", "--name", "x")[0] == 1
    assert [b.name for b in rows(url, models.Bank)] == ["Demo Bank"]


def test_database_url_from_the_environment(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'env.db'}"
    monkeypatch.setenv("PLEDGEWATCH_DATABASE_URL", url)
    monkeypatch.chdir(tmp_path)
    assert run("cloud", "admin", "create-bank", "ENV", "--name", "From env")[0] == 0
    assert count(url, models.Bank) == 1


def test_bad_database_url_is_a_usage_error(tmp_path: Path) -> None:
    code, _, err = run("cloud", "admin", "list", "banks", "--database-url", "nonsense://x")
    assert code == 2 and "bad database URL" in err


def test_unreachable_database_is_refused_without_traceback(tmp_path: Path) -> None:
    code, _, err = run("cloud", "admin", "list", "banks", "--database-url",
                       f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}")
    assert code == 1 and "Traceback" not in err and err.startswith("pledgewatch cloud admin")


def test_create_user(url: str) -> None:
    assert admin(url, "create-bank", "DEMO", "--name", "Demo")[0] == 0
    assert admin(url, "create-user", "--bank", "DEMO", "Ana@Bank.example", "--role",
                 "admin") == (0, "user ana@bank.example (admin) created in bank DEMO\n", "")
    assert admin(url, "create-user", "--bank", "DEMO", "ana@bank.example", "--role",
                 "viewer")[0] == 1  # already there
    assert admin(url, "create-user", "--bank", "NOPE", "x@y.z", "--role", "viewer")[0] == 1
    assert admin(url, "create-user", "--bank", "DEMO", "not-an-email", "--role",
                 "viewer")[0] == 1
    code, _, err = admin(url, "create-user", "--bank", "DEMO", "x@y.z", "--role", "root")
    assert code == 2 and "invalid choice" in err
    users = rows(url, models.User)
    assert [(u.email, u.role) for u in users] == [("ana@bank.example", "admin")]


# -- tokens ----------------------------------------------------------------------------------
def test_token_is_printed_once_and_stored_hashed(demo: str, tmp_path: Path) -> None:
    code, out, err = admin(demo, "create-token", "--bank", "DEMO", "risk@demo.example",
                           "--expires-days", "30")
    assert code == 0
    token = out.strip()
    assert re.fullmatch(r"pw_[0-9a-f]{8}_[A-Za-z0-9_-]{43}", token)
    assert "shown only now" in err and token not in err
    (row,) = rows(demo, models.ApiToken)
    assert row.token_hash == hashlib.sha256(token.encode()).digest()
    assert row.prefix == token.split("_")[1]
    assert row.expires_at is not None and not row.revoked
    secret = token.split("_", 2)[2]
    db_bytes = b"".join(p.read_bytes() for p in tmp_path.glob("admin.db*"))
    assert secret.encode() not in db_bytes and token.encode() not in db_bytes
    assert hashlib.sha256(token.encode()).digest() in db_bytes  # the hash is what is kept


def test_token_needs_a_known_active_user(demo: str) -> None:
    assert admin(demo, "create-token", "--bank", "DEMO", "nobody@demo.example")[0] == 1
    assert admin(demo, "create-token", "--bank", "OTHER", "risk@demo.example")[0] == 1
    assert admin(demo, "create-token", "--bank", "DEMO", "risk@demo.example",
                 "--expires-days", "0")[0] == 2
    assert count(demo, models.ApiToken) == 0


def test_revoke_token(demo: str) -> None:
    token = admin(demo, "create-token", "--bank", "DEMO", "risk@demo.example")[1].strip()
    prefix = token.split("_")[1]
    assert admin(demo, "revoke-token", prefix) == (0, f"token {prefix} revoked\n", "")
    assert admin(demo, "revoke-token", token) == (0, f"token {prefix} was already revoked\n",
                                                  "")
    assert admin(demo, "revoke-token", "00000000")[0] == 1
    assert [t.revoked for t in rows(demo, models.ApiToken)] == [True]


# -- gateways --------------------------------------------------------------------------------
def test_register_gateway_from_key_file_and_b64(demo: str, tmp_path: Path) -> None:
    key = generate_keypair(tmp_path / "gw.key")
    assert admin(demo, "register-gateway", "--bank", "DEMO", "--site", "RANCH-1", "gw-1",
                 "--public-key-file", str(tmp_path / "gw.key.pub")) == (
        0, "gateway gw-1 registered at site RANCH-1 of bank DEMO\n", "")
    other = Ed25519PrivateKey.generate()
    assert admin(demo, "register-gateway", "--bank", "DEMO", "--site", "WH-1", "gw-2",
                 "--public-key", public_key_b64(other))[0] == 0
    got = {g.gateway_id: g.public_key for g in rows(demo, models.Gateway)}
    assert got == {"gw-1": base64.b64decode(public_key_b64(key)),
                   "gw-2": base64.b64decode(public_key_b64(other))}
    code, _, err = admin(demo, "register-gateway", "--bank", "DEMO", "--site", "WH-1", "gw-1",
                         "--public-key", public_key_b64(other))
    assert code == 1 and "already registered" in err


def _write(tmp_path: Path, data: bytes) -> str:
    p = tmp_path / "key.pub"
    p.write_bytes(data)
    return str(p)


KEY32 = base64.b64encode(bytes(range(32))).decode()
BAD_KEYS = [
    ("not-base64", ["--public-key", "not base64!"], "public key is not base64"),
    ("31-bytes", ["--public-key", base64.b64encode(bytes(31)).decode()],
     "public key is 31 bytes, an Ed25519 key is 32"),
    ("33-bytes", ["--public-key", base64.b64encode(bytes(33)).decode()],
     "public key is 33 bytes, an Ed25519 key is 32"),
    ("empty", ["--public-key", ""], "public key is 0 bytes, an Ed25519 key is 32"),
    ("unknown-site", ["--public-key", KEY32, "--site", "NOPE"], "bank 'DEMO' has no site 'NOPE'"),
    ("bad-gateway-id", ["--public-key", KEY32, "--gateway", "gw 1"],
     "gateway code 'gw 1' must be 1-64 characters of A-Z a-z 0-9 _ . : -"),
]


@pytest.mark.parametrize(("extra", "message"), [(b[1], b[2]) for b in BAD_KEYS],
                         ids=[b[0] for b in BAD_KEYS])
def test_register_gateway_rejects(demo: str, extra: list[str], message: str) -> None:
    args = list(extra)
    site, gw = "RANCH-1", "gw-1"
    if "--site" in args:
        i = args.index("--site")
        site = args.pop(i + 1)
        args.pop(i)
    if "--gateway" in args:
        i = args.index("--gateway")
        gw = args.pop(i + 1)
        args.pop(i)
    code, out, err = admin(demo, "register-gateway", "--bank", "DEMO", "--site", site, gw,
                           *args)
    assert (code, out) == (1, "")
    assert err == f"pledgewatch cloud admin register-gateway: {message}\n"
    assert count(demo, models.Gateway) == 0


def test_register_gateway_rejects_bad_key_files(demo: str, tmp_path: Path) -> None:
    generate_keypair(tmp_path / "gw.key")
    cases = {
        str(tmp_path / "gw.key"): "not a public key file",  # the private key by mistake
        str(tmp_path / "missing.pub"): "cannot read",
        _write(tmp_path, b"\xff\xfe"): "not a base64 public key",
    }
    for path, reason in cases.items():
        code, _, err = admin(demo, "register-gateway", "--bank", "DEMO", "--site", "RANCH-1",
                             "gw-1", "--public-key-file", path)
        assert code == 1 and reason in err and path in err, err
    both = admin(demo, "register-gateway", "--bank", "DEMO", "--site", "RANCH-1", "gw-1",
                 "--public-key", KEY32, "--public-key-file", str(tmp_path / "gw.key.pub"))
    neither = admin(demo, "register-gateway", "--bank", "DEMO", "--site", "RANCH-1", "gw-1")
    assert both[0] == 2 and neither[0] == 2
    assert count(demo, models.Gateway) == 0


def test_disable_gateway(demo: str) -> None:
    assert admin(demo, "register-gateway", "--bank", "DEMO", "--site", "RANCH-1", "gw-1",
                 "--public-key", KEY32)[0] == 0
    assert admin(demo, "disable-gateway", "gw-1") == (0, "gateway gw-1 disabled\n", "")
    assert admin(demo, "disable-gateway", "gw-1") == (0, "gateway gw-1 was already disabled\n",
                                                      "")
    assert admin(demo, "disable-gateway", "gw-9")[0] == 1
    assert [g.disabled for g in rows(demo, models.Gateway)] == [True]


# -- imports, prices, release orders ---------------------------------------------------------
def test_import_errors_are_listed_on_stderr_and_nothing_written(demo: str,
                                                                tmp_path: Path) -> None:
    bad = tmp_path / "animals.csv"
    good = (EXAMPLES / "animals.csv").read_text().splitlines()
    good[10] = good[10].replace("L-2025-001", "L-NOPE")
    good.append(good[1])
    bad.write_text("\n".join(good) + "\n")
    code, out, err = admin(demo, "import-animals", "--bank", "DEMO", str(bad))
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        f"{bad}:11: column loan: no loan 'L-NOPE' (import loans first)",
        f"{bad}:1002: column epc: duplicate E28011700001000000000000 (also on line 2)",
        f"{bad}:1002: column iso11784: duplicate 999000100000000 (also on line 2)",
        f"{bad}: 3 error(s); nothing imported"]
    assert count(demo, models.PledgedAnimal) == 0


def test_import_prints_counts_and_warnings(demo: str, tmp_path: Path) -> None:
    code, out, _ = admin(demo, "import-animals", "--bank", "DEMO",
                         str(EXAMPLES / "animals.csv"))
    assert (code, out) == (0, f"imported 1000 animals from {EXAMPLES / 'animals.csv'}\n")
    again = tmp_path / "again.csv"
    again.write_text("epc,loan,site\nE28011700001000000000005,L-2025-001,RANCH-1\n")
    assert admin(demo, "import-animals", "--bank", "DEMO", str(again))[0] == 1
    assert count(demo, models.PledgedAnimal) == 1000


def test_import_of_a_missing_file_is_refused(demo: str, tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    code, _, err = admin(demo, "import-lots", "--bank", "DEMO", str(missing))
    assert code == 1
    assert err.splitlines() == [f"{missing}: cannot read: No such file or directory",
                                f"{missing}: 1 error(s); nothing imported"]


def test_add_price(demo: str) -> None:
    assert admin(demo, "add-price", "--bank", "DEMO", "--commodity", "cattle_live", "--price",
                 "2.35", "--unit", "kg", "--currency", "USD", "--date", "2025-05-30") == (
        0, "price recorded: cattle_live 2.35 USD/kg as of 2025-05-30\n", "")
    base = ["add-price", "--bank", "DEMO", "--commodity", "soybean", "--unit", "t"]
    assert admin(demo, *base, "--price", "-1", "--currency", "USD", "--date",
                 "2025-05-30")[0] == 1
    assert admin(demo, *base, "--price", "1", "--currency", "usd", "--date",
                 "2025-05-30")[0] == 1
    assert admin(demo, *base, "--price", "1", "--currency", "USD", "--date", "30/05/2025")[0] \
        == 2
    assert admin(demo, "add-price", "--bank", "DEMO", "--commodity", "x", "--unit", "lb",
                 "--price", "1", "--currency", "USD", "--date", "2025-05-30")[0] == 2
    assert [(p.commodity, str(p.price)) for p in rows(demo, models.Price)] == [
        ("cattle_live", "2.3500")]


def test_add_release_order(demo: str) -> None:
    assert admin(demo, "import-lots", "--bank", "DEMO", str(EXAMPLES / "lots.csv"))[0] == 0
    base = ["add-release-order", "--bank", "DEMO", "--site", "WH-1", "--quantity-kg", "30000"]
    code, out, _ = admin(demo, *base, "--lot", "LOT-0001", "--truck", "AB123CD",
                         "--valid-from", "2025-06-02", "--valid-to", "2025-06-05T12:00+00:00")
    assert code == 0 and out.endswith("30000 kg from site WH-1 lot LOT-0001\n")
    assert admin(demo, *base, "--lot", "LOT-9999", "--valid-from", "2025-06-02",
                 "--valid-to", "2025-06-05")[0] == 1
    assert admin(demo, *base, "--valid-from", "2025-06-05", "--valid-to", "2025-06-02")[0] == 1
    assert admin(demo, *base, "--valid-from", "2025-06-05T10:00", "--valid-to",
                 "2025-06-06")[0] == 2  # no UTC offset
    (order,) = rows(demo, models.ReleaseOrder)
    assert order.valid_from_ms == 1_748_822_400_000
    assert order.valid_to_ms == 1_749_124_800_000
    assert order.truck_id == "AB123CD" and order.lot_id is not None


# -- geofences -------------------------------------------------------------------------------
# the Rosario warehouse's yard, drawn clockwise from its south-west corner (south and west:
# every coordinate is negative, as argparse must let through)
YARD = "-32.9480,-60.6410; -32.9455,-60.6410; -32.9455,-60.6375; -32.9480,-60.6375"


def test_add_list_and_remove_geofences(demo: str) -> None:
    code, out, err = admin(demo, "add-geofence", "--bank", "DEMO", "--site", "WH-1", "yard",
                           "--points", YARD)
    assert (code, out, err) == (0, "geofence 'yard' (4 points) added to site WH-1 of bank "
                                   "DEMO\n", "")
    # the --points=... form, a closing point that repeats the first, a trailing ";"
    code, out, _ = admin(demo, "add-geofence", "--bank", "DEMO", "--site", "RANCH-1",
                         "paddock 7", "--points=-36.62,-64.29;-36.61,-64.29;-36.61,-64.27;"
                         "-36.62,-64.29;")
    assert code == 0 and "'paddock 7' (3 points)" in out
    (fence,) = [f for f in rows(demo, models.Geofence) if f.name == "yard"]
    assert fence.polygon == {"points": [[-32.948, -60.641], [-32.9455, -60.641],
                                        [-32.9455, -60.6375], [-32.948, -60.6375]]}
    assert admin(demo, "list-geofences", "--bank", "DEMO")[1].splitlines() == [
        "SITE     NAME       N  POINTS",
        "RANCH-1  paddock 7  3  -36.62,-64.29;-36.61,-64.29;-36.61,-64.27",
        "WH-1     yard       4  -32.948,-60.641;-32.9455,-60.641;-32.9455,-60.6375;"
        "-32.948,-60.6375"]
    assert len(admin(demo, "list-geofences", "--bank", "DEMO", "--site", "WH-1")[1]
               .splitlines()) == 2

    # what the rules engine reads back: the polygon, and a fix in the yard is inside it
    engine = make_engine(demo)
    try:
        with Session(engine) as s:
            sites = {i.registry.site_code: i.registry for i in load_sites(s).values()}
    finally:
        engine.dispose()
    (polygon,) = sites["WH-1"].geofences
    assert rules.point_in_polygon(-32.9468, -60.6393, polygon)  # the warehouse's own point
    assert not rules.point_in_polygon(-32.9500, -60.6393, polygon)  # 220 m south of the gate

    # another bank sees none of it, and cannot draw on DEMO's site
    assert admin(demo, "create-bank", "OTHER", "--name", "Other Bank")[0] == 0
    assert admin(demo, "list-geofences", "--bank", "OTHER")[1] == "SITE  NAME  N  POINTS\n"
    code, _, err = admin(demo, "add-geofence", "--bank", "OTHER", "--site", "WH-1", "yard",
                         "--points", YARD)
    assert (code, err) == (1, "pledgewatch cloud admin add-geofence: bank 'OTHER' has no site "
                              "'WH-1'\n")

    assert admin(demo, "remove-geofence", "--bank", "DEMO", "--site", "WH-1", "yard") == (
        0, "geofence 'yard' removed from site WH-1 of bank DEMO\n", "")
    code, _, err = admin(demo, "remove-geofence", "--bank", "DEMO", "--site", "WH-1", "yard")
    assert (code, err) == (1, "pledgewatch cloud admin remove-geofence: site 'WH-1' has no "
                              "geofence 'yard'\n")
    assert [f.name for f in rows(demo, models.Geofence)] == ["paddock 7"]


BAD_FENCES = [
    ("two-points", "0,0;1,1", "a geofence needs at least 3 distinct points, got 2"),
    ("repeated-points", "0,0;1,1;0,0;1,1", "a geofence needs at least 3 distinct points, got 2"),
    ("empty", " ", 'no points given (--points "lat,lon;lat,lon;lat,lon")'),
    ("one-number", "0,0;1;2,3", "point 2 '1' is not lat,lon"),
    ("three-numbers", "0,0,0;1,0;2,3", "point 1 '0,0,0' is not lat,lon"),
    ("not-a-number", "0,0;x,1;2,3", "point 2 'x,1' is not two numbers (lat,lon in decimal "
                                    "degrees)"),
    ("latitude", "0,0;91,1;2,3", "point 2: latitude 91 is outside -90..90"),
    ("longitude", "0,0;1,1;2,-180.5", "point 3: longitude -180.5 is outside -180..180"),
    ("nan", "nan,0;1,0;2,3", "point 1: latitude nan is outside -90..90"),
    ("collinear", "-32.1,-60.1;-32.2,-60.2;-32.3,-60.3", "the points enclose no area (all on "
                                                         "one line)"),
    ("antimeridian", "0,-179;1,179;2,-179", "the polygon spans more than 180 degrees of "
     "longitude (fences across the antimeridian are not supported)"),
    ("too-many", ";".join(f"{i % 7},{i / 1000}" for i in range(1001)),
     "a geofence may have at most 1000 points, got 1001"),
]


def test_add_geofence_rejects(demo: str) -> None:
    # one bank for every case (a fresh database per case costs ~1.5 s of migrations)
    for case, points, message in BAD_FENCES:
        code, out, err = admin(demo, "add-geofence", "--bank", "DEMO", "--site", "WH-1",
                               "yard", "--points", points)
        assert (code, out) == (1, ""), case
        assert err == f"pledgewatch cloud admin add-geofence: {message}\n", case
    assert count(demo, models.Geofence) == 0


def test_add_geofence_refuses_a_second_fence_of_the_same_name(demo: str) -> None:
    base = ["add-geofence", "--bank", "DEMO", "--site", "WH-1"]
    assert admin(demo, *base, "yard", "--points", YARD)[0] == 0
    code, _, err = admin(demo, *base, " yard ", "--points", "0,0;0,1;1,1")
    assert (code, err) == (1, "pledgewatch cloud admin add-geofence: site 'WH-1' already has "
                              "a geofence 'yard' (remove it first to redraw it)\n")
    assert admin(demo, *base, "x" * 101, "--points", YARD)[0] == 1
    assert admin(demo, *base, "", "--points", YARD)[0] == 1
    assert admin(demo, "add-geofence", "--bank", "DEMO", "--site", "WH-1", "yard2")[0] == 2
    assert admin(demo, "list-geofences")[0] == 2  # --bank is required
    assert count(demo, models.Geofence) == 1


# -- lists and usage -------------------------------------------------------------------------
def test_lists(demo: str) -> None:
    admin(demo, "create-token", "--bank", "DEMO", "risk@demo.example")
    admin(demo, "register-gateway", "--bank", "DEMO", "--site", "RANCH-1", "gw-1",
          "--public-key", KEY32)
    assert admin(demo, "list", "banks")[1] == "CODE  NAME\nDEMO  Demo Bank\n"
    assert admin(demo, "list", "users", "--bank", "DEMO")[1].splitlines() == [
        "EMAIL              ROLE     DISABLED", "risk@demo.example  analyst  no"]
    tokens = admin(demo, "list", "tokens", "--bank", "DEMO")[1].splitlines()
    assert len(tokens) == 2 and "risk@demo.example  analyst" in tokens[1]
    assert tokens[1].endswith("-        no")  # never expires, not revoked
    assert admin(demo, "list", "gateways", "--bank", "DEMO")[1].splitlines() == [
        "GATEWAY  SITE     DISABLED  LAST_SEQ", "gw-1     RANCH-1  no        0"]
    assert admin(demo, "list", "loans", "--bank", "DEMO")[1].splitlines() == [
        "LOAN        BORROWER  CURRENCY  OUTSTANDING  SITES",
        "L-2025-001  B-PAMPA   USD       850000.00    RANCH-1",
        "L-2025-002  B-GRANOS  USD       1200000.00   WH-1"]
    assert admin(demo, "list", "sites", "--bank", "OTHER")[0] == 1
    code, _, err = admin(demo, "list", "users")
    assert code == 2 and "--bank CODE is required" in err


def test_usage_errors_exit_2_without_traceback() -> None:
    for argv in (["cloud"], ["cloud", "admin"], ["cloud", "admin", "create-bank"],
                 ["cloud", "admin", "nope"]):
        code, _, err = run(*argv)
        assert code == 2 and "Traceback" not in err and "usage:" in err, argv
