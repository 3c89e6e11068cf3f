"""Fields/s of the served field engine by batch size: the figures behind the Space's batch setting.

The Space merges concurrent fields into one forward pass of at most ``max_batch_size`` fields
(``space/batching.py``). A larger pass only pays if the engine does more fields/s at that size; a
field that waits for a full pass waits for all of it. This prints, per batch size, the median time
per pass and fields/s for the engine ``Predictor`` serves (the runtime in config.json, or Keras),
sizes visited in turn each round so outside load hits all alike.

    .venv/bin/python -m scripts.perf.batch_sizes --model hub_model
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from imageclf.model.predictor import Predictor

SIZES = (1, 2, 4, 8, 16, 32, 64)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="hub_model")
    parser.add_argument("--runtime", default="auto", choices=("auto", "keras"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--fields", type=int, default=64, help="fields timed per size per round")
    args = parser.parse_args(argv)
    predictor = Predictor(args.model, runtime=args.runtime)
    size = predictor.input_size
    tiles = np.random.default_rng(0).integers(0, 256, (max(SIZES), size[0], size[1], 3), dtype=np.uint8)
    times: dict[int, list[float]] = {n: [] for n in SIZES}
    for n in SIZES:   # warm-up: the first pass at a new shape compiles
        predictor.engine.run(tiles[:n])
    for _ in range(args.rounds):
        for n in SIZES:
            passes = max(1, args.fields // n)
            start = time.perf_counter()
            for _ in range(passes):
                predictor.engine.run(tiles[:n])
            times[n].append((time.perf_counter() - start) / passes)
    print(f"engine: {predictor.runtime}")
    print("| batch | ms per pass | fields/s |\n|---:|---:|---:|")
    for n in SIZES:
        per_pass = float(np.median(times[n]))
        print(f"| {n} | {1000 * per_pass:.1f} | {n / per_pass:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
