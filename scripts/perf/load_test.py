"""Load test: N concurrent ``gradio_client`` clients, M ``/predict`` requests each; prints figures.

Every client connects first; then all start together and send their requests one after the
other, so up to N requests wait in the Space's queue at once. Printed: failures (with the
first messages), wall time, throughput and latency percentiles. Exit code 1 on any failure.

Example (figures illustrative; measured ones are in README.md, "Reliability"):
    ```bash
    $ python -m scripts.perf.load_test --url http://127.0.0.1:7860 --clients 64 --requests 10
    load test: 64 clients x 10 requests = 640 requests to http://127.0.0.1:7860
    failures: 0 of 640
    wall time: 41.2 s, throughput: 15.5 requests/s
    latency: p50 3.95 s, p95 4.61 s, max 5.02 s
    ```
    Without ``--url`` it starts ``space/app.py`` on ``--model-dir`` (default ``hub_model``) itself.
    ``--noop-peer`` then runs the same load against a no-op app with ``/predict``'s signature and
    queue (``probes.NOOP_PREDICT_APP``), after the Space, and prints the ratio: on a 2-core machine
    the 64 client threads share the cores with the server, so the peer shows the floor.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scripts.perf.probes import NOOP_PREDICT_APP, noop_space
from scripts.perf.traffic import add_target_arguments, classify, percentile, sample_images, space_target
from scripts.predict_client import connect


@dataclass
class LoadResult:
    """Latencies of the successful requests, failure messages, and the wall time of the run."""

    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def total(self) -> int:
        return len(self.latencies) + len(self.failures)


def run_load(url: str, images: Sequence[Path], *, clients: int, requests: int) -> LoadResult:
    """Send ``clients x requests`` ``/predict`` calls from ``clients`` threads; collect the figures."""
    result, lock = LoadResult(), threading.Lock()
    ready = threading.Barrier(clients + 1)

    def worker(index: int) -> None:
        try:
            client = connect(url)
        except Exception as err:  # a client that cannot connect fails all its requests
            with lock:
                result.failures += [f"connect: {type(err).__name__}: {err}"] * requests
            ready.wait()
            return
        ready.wait()
        for number in range(requests):
            image = images[(index * requests + number) % len(images)]
            start = time.perf_counter()
            try:
                classify(client, image)
            except Exception as err:  # counted and reported, the run goes on
                with lock:
                    result.failures.append(f"{type(err).__name__}: {str(err)[:200]}")
                continue
            with lock:
                result.latencies.append(time.perf_counter() - start)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    ready.wait()  # every client connected: the clock starts now
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    result.wall_s = time.perf_counter() - start
    return result


def report(result: LoadResult) -> list[str]:
    """The printed lines, e.g. ``["failures: 0 of 640", "wall time: ...", "latency: ..."]``."""
    lines = [f"failures: {len(result.failures)} of {result.total}"]
    lines += [f"  {message}" for message in result.failures[:5]]
    rate = len(result.latencies) / result.wall_s if result.wall_s > 0 else 0.0
    lines.append(f"wall time: {result.wall_s:.1f} s, throughput: {rate:.2f} requests/s")
    if result.latencies:
        lat = result.latencies
        lines.append(f"latency: p50 {percentile(lat, 50):.3f} s, p95 {percentile(lat, 95):.3f} s, "
                     f"max {max(lat):.3f} s")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.perf.load_test", description=__doc__.split("\n")[0])
    add_target_arguments(parser)
    parser.add_argument("--clients", type=int, default=64, help="concurrent clients (default 64)")
    parser.add_argument("--requests", type=int, default=10, help="requests per client (default 10)")
    parser.add_argument("--noop-peer", action="store_true",
                        help="also run the same load against a no-op app with /predict's signature, and compare")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        images = sample_images(args.images, count=16, out_dir=Path(tmp))
        with space_target(args) as (url, _pid):
            print(f"load test: {args.clients} clients x {args.requests} requests = "
                  f"{args.clients * args.requests} requests to {url}", flush=True)
            result = run_load(url, images, clients=args.clients, requests=args.requests)
        print("\n".join(report(result)), flush=True)
        if not args.noop_peer:
            return 1 if result.failures else 0
        with noop_space(Path(tmp), source=NOOP_PREDICT_APP) as noop:
            print(f"no-op peer: the same load to {noop.url}", flush=True)
            peer = run_load(noop.url, images, clients=args.clients, requests=args.requests)
        print("\n".join(report(peer)), flush=True)
        if result.latencies and peer.latencies:
            print(f"Space / no-op: p50 {percentile(result.latencies, 50) / percentile(peer.latencies, 50):.2f} x, "
                  f"p95 {percentile(result.latencies, 95) / percentile(peer.latencies, 95):.2f} x", flush=True)
    return 1 if result.failures or peer.failures else 0


if __name__ == "__main__":
    sys.exit(main())
