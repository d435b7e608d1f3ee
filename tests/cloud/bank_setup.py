"""Register a test bank, one ranch site and gateway ``gw-1`` through the real admin CLI."""

from __future__ import annotations

import io
from pathlib import Path

from pledgewatch.cli import main


def admin(db_url: str, *args: str) -> str:
    """Run ``pledgewatch cloud admin ARGS`` in-process; fail the test on a non-zero exit."""
    out, err = io.StringIO(), io.StringIO()
    code = main(["cloud", "admin", *args, "--database-url", db_url], out=out, err=err)
    assert code == 0, err.getvalue()
    return out.getvalue()


def setup_bank(tmp: Path, db_url: str, pub_file: Path) -> None:
    """Bank ``TB`` with site ``ranch-1`` and gateway ``gw-1`` (public key ``pub_file``)."""
    sites = tmp / "sites.csv"
    sites.write_text("site,name,kind,lat,lon\nranch-1,Test ranch,ranch,-36.6,-64.3\n")
    admin(db_url, "create-bank", "TB", "--name", "Test Bank")
    admin(db_url, "import-sites", "--bank", "TB", str(sites))
    admin(db_url, "register-gateway", "--bank", "TB", "--site", "ranch-1", "gw-1",
          "--public-key-file", str(pub_file))
