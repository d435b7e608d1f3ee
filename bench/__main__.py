"""``python -m bench``: run every benchmark, print a table, write bench/results.json.

Every row carries its own baseline measured in the same run on the same data; ``ratio`` is
baseline time / measured time (1.0 = as fast as the baseline)."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

SUITES = ("codecs", "aggregate", "outbox", "gateway", "ingest", "valuation", "simrun", "alerts")


def _machine() -> dict[str, object]:
    return {"python": sys.version.split()[0], "platform": platform.platform(),
            "cpus": os.cpu_count()}


def _rate(row: dict[str, Any]) -> tuple[str, float]:
    if "latency_p50_ms" in row:
        return "ms p50", float(row["latency_p50_ms"])
    if "rss_mb" in row:
        return "MB RSS", float(row["rss_mb"])
    if "envelope_bytes_per_reading" in row:
        return "B/reading", float(row["envelope_bytes_per_reading"])
    if "file_per_logical" in row:
        return "file/acct", float(row["file_per_logical"])
    for key, value in row.items():
        if key.endswith("_per_s") and not key.startswith("baseline"):
            return key.removesuffix("_per_s"), float(value)
    return "", 0.0


def _baseline_rate(row: dict[str, Any]) -> float:
    if "baseline_ms" in row:
        return float(row["baseline_ms"])
    if "baseline_rss_mb" in row:
        return float(row["baseline_rss_mb"])
    if "json_bytes_per_reading" in row:
        return float(row["json_bytes_per_reading"])
    for key, value in row.items():
        if key.startswith("baseline") and key.endswith("_per_s"):
            return float(value)
    return 0.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench")
    p.add_argument("suites", nargs="*", default=list(SUITES), help=", ".join(SUITES))
    p.add_argument("--out", default=str(Path(__file__).with_name("results.json")))
    ns = p.parse_args(argv)
    results: list[dict[str, Any]] = []
    for name in ns.suites:
        if name not in SUITES:
            p.error(f"unknown suite {name!r}; choose from {', '.join(SUITES)}")
        t0 = time.perf_counter()
        print(f"running {name} ...", file=sys.stderr, flush=True)
        rows = importlib.import_module(f"bench.{name}").run()
        print(f"  {name}: {len(rows)} figures in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr, flush=True)
        results += rows
    print(f"{'benchmark':<34} {'unit':<9} {'figure':>12} {'baseline':>12} {'ratio':>7}"
          "  baseline is")
    for r in results:
        unit, rate = _rate(r)
        ratio = r.get("ratio_vs_baseline", r.get("json_over_envelope", float("nan")))
        base_name = r.get("baseline", "JSON of the same readings"
                          if "json_bytes_per_reading" in r else "")
        print(f"{r['bench']:<34} {unit:<9} {rate:>12,.2f} {_baseline_rate(r):>12,.0f} "
              f"{ratio:>7.3f}  {base_name}")
    print("figure: per second unless the unit says otherwise; ratio = baseline time / measured "
          "time (for RSS: baseline MB / measured MB)")
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of the benchmark process: {rss_mb:.0f} MB")
    Path(ns.out).write_text(json.dumps({"machine": _machine(), "peak_rss_mb": rss_mb,
                                        "results": results}, indent=2))
    print(f"results written to {ns.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
