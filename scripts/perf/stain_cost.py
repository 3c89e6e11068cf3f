"""The stain step's cost beside its floor, the bare served engine, in one run (rounds interleaved).

Times ``imageclf.core.stain.normalise_each`` (each tile its own image: one estimate, one mapping) and the
served ``FieldEngine`` of a model folder on the same LC25000 tiles, at batch 32, and prints both per
field and their ratio: machines of this kind differ up to 2x in absolute speed, the ratio travels.

Example:
    .venv/bin/python -m scripts.perf.stain_cost --model hub_model --stain .cache/features-macenko/stain.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from imageclf.core import stain
from imageclf.core.imaging import IMAGE_SUFFIXES, load_model_input
from imageclf.model.config_blocks import parse_block
from imageclf.model.predictor import Predictor


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("hub_model"))
    parser.add_argument("--stain", type=Path, required=True, help="a stain block (JSON), e.g. a model's or a run's")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/lc25000-lung-224"))
    parser.add_argument("--tiles", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    spec = parse_block("stain", json.loads(args.stain.read_text()))
    paths = sorted(p for p in args.data.glob("*/*") if p.suffix.lower() in IMAGE_SUFFIXES)
    paths = paths[::max(1, len(paths) // args.tiles)][:args.tiles]
    tiles = np.stack([load_model_input(p, size=(224, 224)) for p in paths])
    engine = Predictor(args.model).engine
    engine.run(tiles[:32])   # warm-up
    for r in range(args.rounds):
        start = time.perf_counter()
        for i in range(0, len(tiles), 32):
            engine.run(tiles[i:i + 32])
        floor = (time.perf_counter() - start) / len(tiles)
        start = time.perf_counter()
        stain.normalise_each(tiles, spec)
        cost = (time.perf_counter() - start) / len(tiles)
        print(f"round {r}: bare served engine {1000 * floor:.1f} ms/field; stain step {1000 * cost:.1f} ms/field; "
              f"ratio {cost / floor:.2f}")


if __name__ == "__main__":
    main()
