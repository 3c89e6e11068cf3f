"""Soak test: K sequential ``/predict`` requests; prints the server's resident memory as it goes.

The Space's RSS is read at the start (after a few warm-up requests, which fill one-off
caches) and every ``--every`` requests, then the growth over the run. The server PID is
known when this script starts the Space itself (default) or is given with ``--pid``.
Exit code 1 on any failed request, or when ``--max-growth-mb`` is given and exceeded.

Example (figures illustrative; measured ones are in README.md, "Reliability"):
    ```bash
    $ python -m scripts.perf.soak_test --requests 2000
    soak test: 2000 sequential requests to http://127.0.0.1:40123 (server pid 81234)
    RSS at start: 655.2 MB (after 20 warm-up requests)
    RSS after 500 requests: 657.0 MB
    ...
    RSS growth: +3.1 MB over 2000 requests; failures: 0
    ```
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from scripts.perf.local_space import rss_bytes
from scripts.perf.traffic import add_target_arguments, classify, sample_images, space_target
from scripts.predict_client import connect

MB = 1024 * 1024


def run_soak(url: str, images: Sequence[Path], *, requests: int, every: int, warmup: int,
             pid: int | None, emit: Callable[[str], None] = print) -> tuple[float | None, int]:
    """Send the requests one by one; emit RSS lines; return (RSS growth in MB or None, failures)."""
    client = connect(url)
    for number in range(warmup):
        classify(client, images[number % len(images)])
    start = rss_bytes(pid) if pid else None
    emit(f"RSS at start: {_mb(start)} (after {warmup} warm-up requests)")
    failures, rss = 0, start
    for number in range(1, requests + 1):
        try:
            classify(client, images[number % len(images)])
        except Exception as err:  # counted; a soak run reports, it does not stop at the first error
            failures += 1
            if failures <= 5:
                emit(f"  request {number} failed: {type(err).__name__}: {str(err)[:200]}")
        if number % every == 0 or number == requests:
            rss = rss_bytes(pid) if pid else None
            emit(f"RSS after {number} requests: {_mb(rss)}")
    growth = (rss - start) / MB if start is not None and rss is not None else None
    shown = f"{growth:+.1f} MB" if growth is not None else "unknown (no --pid)"
    emit(f"RSS growth: {shown} over {requests} requests; failures: {failures}")
    return growth, failures


def _mb(value: int | None) -> str:
    return f"{value / MB:.1f} MB" if value is not None else "unknown (no --pid)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.perf.soak_test", description=__doc__.split("\n")[0])
    add_target_arguments(parser)
    parser.add_argument("--requests", type=int, default=2000, help="sequential requests (default 2000)")
    parser.add_argument("--every", type=int, default=500, help="print RSS every N requests (default 500)")
    parser.add_argument("--warmup", type=int, default=20, help="requests before the start figure (default 20)")
    parser.add_argument("--max-growth-mb", type=float, default=None, help="fail when RSS grows more")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, space_target(args) as (url, pid):
        images = sample_images(args.images, count=16, out_dir=Path(tmp))
        print(f"soak test: {args.requests} sequential requests to {url} "
              f"(server pid {pid if pid else 'unknown'})", flush=True)
        growth, failures = run_soak(url, images, requests=args.requests, every=args.every,
                                    warmup=args.warmup, pid=pid,
                                    emit=lambda line: print(line, flush=True))
    too_much = args.max_growth_mb is not None and (growth is None or growth > args.max_growth_mb)
    return 1 if failures or too_much else 0


if __name__ == "__main__":
    sys.exit(main())
