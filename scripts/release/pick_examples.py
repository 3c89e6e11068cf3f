"""Copy a few test-split images per class into a folder of examples for the Space.

Examples come from the model folder's own ``split_manifest.csv``, test split only, so the
gallery never shows an image the model was trained or tuned on. Picks are deterministic
(spread evenly over each class's sorted test files) and named ``<class id>_<n><suffix>``.

Example:
    ```bash
    $ python -m scripts.release.pick_examples hub_model --data ../shared/data/lc25000-lung-224 --out build/examples
    build/examples: 6 images (2 per class) from the test split of hub_model/split_manifest.csv
    $ python -m scripts.release.push_model --repo-id alice/lung-histology --examples build/examples
    ```
"""
from __future__ import annotations

import argparse
import csv
import shutil
import sys
from collections import defaultdict
from pathlib import Path

from imageclf.errors import ModelError


class ExamplesError(ModelError, RuntimeError):
    """The manifest or the dataset needed to pick examples is missing."""

def pick_examples(model_folder: str | Path, *, data: str | Path, out: str | Path, per_class: int = 2) -> list[Path]:
    """Copy ``per_class`` test-split images of each class from ``data`` into ``out``; return the copies.

    Raises:
        ExamplesError: no ``split_manifest.csv`` in the model folder, or ``data`` lacks a listed file.
    """
    manifest = Path(model_folder) / "split_manifest.csv"
    if not manifest.is_file():
        raise ExamplesError(f"{manifest} not found: examples are picked from the model's test split")
    by_class: dict[str, list[str]] = defaultdict(list)
    with manifest.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get("split") == "test":
                by_class[row["label"]].append(row["path"])
    if not by_class:
        raise ExamplesError(f"{manifest} has no test rows")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    copies = []
    for label in sorted(by_class):
        paths = sorted(by_class[label])
        step = max(1, len(paths) // per_class)  # spread over the class, not the first few files
        for n, rel in enumerate(paths[::step][:per_class], start=1):
            source = Path(data) / rel
            if not source.is_file():
                raise ExamplesError(f"{source} not found: is --data the dataset the model was trained on?")
            target = out / f"{label}_{n}{source.suffix.lower()}"
            shutil.copyfile(source, target)
            copies.append(target)
    return copies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.release.pick_examples", description=__doc__.split("\n")[0])
    parser.add_argument("model_folder", nargs="?", default="hub_model")
    parser.add_argument("--data", default="../shared/data/lc25000-lung-224", help="the dataset folder")
    parser.add_argument("--out", default="build/examples", help="folder to copy the examples into")
    parser.add_argument("--per-class", type=int, default=2)
    args = parser.parse_args(argv)
    try:
        copies = pick_examples(args.model_folder, data=args.data, out=args.out, per_class=args.per_class)
    except ExamplesError as err:
        print(f"pick_examples: {err}", file=sys.stderr)
        return 1
    print(f"{args.out}: {len(copies)} images ({args.per_class} per class) from the test split of "
          f"{Path(args.model_folder) / 'split_manifest.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
