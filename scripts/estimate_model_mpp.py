"""Estimate the model's physical scale (microns per pixel of its 224 px input) from images of known scale.

LC25000 publishes no magnification, so the training tiles' microns per pixel are unknown. The
nucleus-size estimate (``imageclf.core.scale.estimate_relative_size``) says how large an image's
nuclei are, in its own pixels, relative to the training tiles; on an image of known microns per
pixel that gives the model's: model mpp = known mpp x relative size. The value is the median over
the MoNuSeg TCGA tiles (40x, about 0.25 um/px: lung and seven other organs), with its spread;
the Kather (0.495 um/px), CoNSeP (about 0.5) tiles and the CMU slide (0.499, from its metadata)
are independent checks, reported but not pooled.

Writes the result into the model's own contract, its config.json's ``scale`` block
(``microns_per_pixel``, and ``microns_per_pixel_note`` with the method and the spread), read once when
the model loads; ``--report FILE`` also writes every figure (per organ, the checks) as JSON.

Example:
    .venv/bin/python -m scripts.estimate_model_mpp --model hub_model
    .venv/bin/python -m scripts.estimate_model_mpp --model hub_model --report runs/model_scale.json
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from imageclf.core.colour import tissue_mask
from imageclf.core.imaging import decode_image
from imageclf.core.scale import ESTIMATOR, estimate_relative_size
from imageclf.core.scale import NucleusReference
from imageclf.model.config import read_config, write_config
from imageclf.slides.physical import ESTIMATE_CROPS, ESTIMATE_SIDE
from imageclf.slides.reader import SlideReader
from imageclf.slides.tissue import find_tissue

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
MONUSEG_MPP = 0.25            # MoNuSeg: TCGA tiles at 40x (the dataset's README: about 0.25 um/px)
CHECKS = {"colorectal-kather": (0.495, "Kather 2016 colorectal tiles, 0.495 um/px"),
          "colorectal-consep": (0.5, "CoNSeP colorectal tiles, halved 40x: about 0.5 um/px")}
CMU_SLIDE = "CMU-1-Small-Region.svs"


def relative(rgb: np.ndarray, reference: NucleusReference) -> float | None:
    size, _ = estimate_relative_size(rgb, reference, tissue=lambda: tissue_mask(rgb))
    return size


def stats(values: list[float]) -> dict[str, Any]:
    array = np.asarray(values, np.float64)
    if not len(array):
        return {"n": 0}
    q1, median, q3 = np.percentile(array, [25, 50, 75])
    return {"median": round(float(median), 4), "iqr": [round(float(q1), 4), round(float(q3), 4)],
            "min": round(float(array.min()), 4), "max": round(float(array.max()), 4), "n": int(array.size)}


def slide_relatives(path: Path, reference: NucleusReference) -> tuple[float, list[float]]:
    """The slide's metadata mpp and the relative nucleus size of its richest tissue crops."""
    with SlideReader(path) as slide:
        downsample = max(1.0, max(slide.dimensions) / 2048)
        mpp = slide.metadata_mpp[0]
        tissue = find_tissue(slide.thumbnail(downsample), downsample=downsample, mpp=mpp)
        sizes = [relative(slide.read(x, y, 0, ESTIMATE_SIDE, ESTIMATE_SIDE), reference)
                 for x, y in tissue.richest(ESTIMATE_SIDE, ESTIMATE_CROPS)]
        return float(mpp), [s for s in sizes if s is not None]


def estimate(data: Path, model: Path) -> dict[str, Any]:
    config = read_config(model)
    reference = config.scale.reference
    root = data / "external-he"
    with open(root / "index.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    groups: dict[str, list[float]] = {}
    organs: dict[str, list[float]] = {}
    unmeasured = 0
    for row in rows:
        folder = row["path"].split("/")[1]
        monuseg = row["path"].startswith(("lung-tcga/", "nonlung/")) and folder not in CHECKS
        if not monuseg and folder not in CHECKS:
            continue
        size = relative(decode_image(root / row["path"]), reference)
        if size is None:
            unmeasured += 1
            continue
        known = MONUSEG_MPP if monuseg else CHECKS[folder][0]
        groups.setdefault("monuseg" if monuseg else folder, []).append(known * size)
        if monuseg:
            organs.setdefault(folder, []).append(known * size)
    main = stats(groups["monuseg"])
    checks = {name: {**stats(groups.get(name, [])), "what": CHECKS[name][1]} for name in CHECKS}
    slide = data / "wsi" / CMU_SLIDE
    if slide.is_file():
        slide_mpp, sizes = slide_relatives(slide, reference)
        checks["cmu-slide"] = {**stats([slide_mpp * s for s in sizes]),
                               "what": f"{CMU_SLIDE}: {len(sizes)} level-0 tissue crops of {ESTIMATE_SIDE} px, "
                                       f"{slide_mpp} um/px (metadata)"}
    return {
        "model_name": config.model_name, "um_per_px": round(main["median"], 3), "spread": main,
        "n": main["n"], "by_organ": {name: stats(values) for name, values in sorted(organs.items())},
        "checks": checks, "unmeasured_images": unmeasured, "estimator": ESTIMATOR,
        "method": (f"model mpp = known mpp x relative nucleus size ({ESTIMATOR}, "
                   "imageclf.core.scale.estimate_relative_size); median over MoNuSeg TCGA tiles at "
                   f"{MONUSEG_MPP} um/px"),
        "summary": f"median over {main['n']} MoNuSeg tiles at {MONUSEG_MPP} um/px",
        "made_by": "python -m scripts.estimate_model_mpp",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help="the shared data folder (external-he/, wsi/)")
    parser.add_argument("--model", type=Path, default=ROOT / "hub_model", help="model folder (its scale reference)")
    parser.add_argument("--report", type=Path, default=None, help="also write every figure here (JSON)")
    args = parser.parse_args(argv)
    if not (args.data / "external-he" / "index.csv").is_file():
        print(f"{args.data / 'external-he'} not found (the shared data beside the project).", file=sys.stderr)
        return 2
    result = estimate(args.data, args.model)
    spread = result["spread"]
    print(f"model: {result['um_per_px']} um/px (median of {spread['n']} MoNuSeg tiles; IQR {spread['iqr'][0]}-"
          f"{spread['iqr'][1]}, range {spread['min']}-{spread['max']})")
    for name, check in result["checks"].items():
        if check.get("n"):
            print(f"  check {name}: {check['median']} um/px (IQR {check['iqr'][0]}-{check['iqr'][1]}, n={check['n']})")
    config = read_config(args.model)
    scale = dataclasses.replace(config.scale, microns_per_pixel=result["um_per_px"],
                                microns_per_pixel_note=scale_note(result))
    write_config(args.model, dataclasses.replace(config, scale=scale))
    print(f"wrote scale.microns_per_pixel = {result['um_per_px']} into {args.model / 'config.json'}")
    if args.report is not None:
        temporary = args.report.with_name(f".{args.report.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        os.replace(temporary, args.report)
        print(f"wrote {args.report}")
    return 0


def scale_note(result: dict[str, Any]) -> str:
    """config.json's ``microns_per_pixel_note``: how the value was measured, and its spread."""
    spread = result["spread"]
    return (f"Estimated, not published: LC25000 gives no pixel size. {result['method']}; "
            f"IQR {spread['iqr'][0]}-{spread['iqr'][1]}, range {spread['min']}-{spread['max']} um/px over "
            f"{spread['n']} tiles ({result['made_by']}).")


if __name__ == "__main__":
    raise SystemExit(main())
