"""``python -m bench``: run every benchmark, print a table, write bench/results.json."""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
from pathlib import Path

from bench import codecs


def _machine() -> dict[str, object]:
    return {"python": sys.version.split()[0], "platform": platform.platform(),
            "cpus": os.cpu_count()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench")
    p.add_argument("--frames", type=int, default=100_000, help="frames per codec stream")
    p.add_argument("--out", default=str(Path(__file__).with_name("results.json")))
    ns = p.parse_args(argv)
    results = codecs.run(frames=ns.frames)
    print(f"{'benchmark':<20} {'frames/s':>12} {'MB/s':>8} {'find frames/s':>14} "
          f"{'ratio':>7}")
    for r in results:
        print(f"{r['bench']:<20} {r['frames_per_s']:>12,.0f} {r['mb_per_s']:>8.1f} "
              f"{r['baseline_frames_per_s']:>14,.0f} {r['ratio_vs_baseline']:>7.3f}")
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {rss_mb:.0f} MB; ratio = time(bytes.find scan) / time(decode), "
          "same data, same run")
    Path(ns.out).write_text(json.dumps({"machine": _machine(), "peak_rss_mb": rss_mb,
                                        "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
