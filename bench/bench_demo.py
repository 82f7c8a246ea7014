"""The demo end to end: wall time and peak RSS of `tokencensus demo` (200k requests, 26 weeks).

`python bench/bench_demo.py [--requests N] [--backend NAME]`
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=200_000)
    ap.add_argument("--backend", default="local")
    args, _ = ap.parse_known_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "demo"
        env = {**os.environ, "XDG_CONFIG_HOME": str(Path(tmp) / "config")}
        t0 = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "tokencensus.cli",
                "demo",
                "--out",
                str(out),
                "--requests",
                str(args.requests),
                "--backend",
                args.backend,
            ],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        wall = time.perf_counter() - t0
        rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        report_mb = (out / "report.html").stat().st_size / 1e6
    t = Table(
        title=f"demo: {args.requests:,} requests, backend {args.backend}, {os.cpu_count()} cores"
    )
    for c in ("figure", "measured", "target"):
        t.add_column(c)
    t.add_row("wall time", f"{wall:.1f} s", "< 300 s")
    t.add_row("peak RSS", f"{rss_mb:,.0f} MB", "< 2,000 MB")
    t.add_row("report.html", f"{report_mb:.2f} MB", "< 5 MB")
    Console().print(t)


if __name__ == "__main__":
    main()
