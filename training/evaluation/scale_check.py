"""Measure the scale rule end to end: the figures behind the model card's scale section.

1. Zoom-outs of TEST tiles (mosaics of same-class tiles shrunk 2x, 3x, 4x): is the factor found
   within +-25%, and is the answer after automatic rescaling as good as on the tiles themselves?
2. The 30 full-size LC25000 originals (768 px): accuracy with ``auto`` and ``native``.
3. MoNuSeg's hand-drawn outlines: the estimated nucleus diameter against the annotated median.
4. Cost: the estimate on a 768 px image, and a whole 2000 x 2000 px upload through the rule.

Usage:
    python -m training.evaluation.scale_check --model hub_model --data ../shared/data/lc25000-lung-224 \
        --manifest training/splits/lc25000-lung-grouped.csv --external ../shared/data/external-he
"""
from __future__ import annotations

import argparse
import csv
import json
import random
import time
from pathlib import Path

import cv2
import numpy as np

from imageclf.core.imaging import decode_image
from imageclf.model.predictor import Predictor
from imageclf.core.scale import estimate_relative_size
from training.calibration.scale_reference import split_tiles, zoom_out, zoom_out_check

REPO = Path(__file__).resolve().parents[2]


def zoom_out_accuracy(predictor, tiles: dict[str, list[Path]], *, zooms=(1.0, 2.0, 3.0), per_zoom: int = 60,
                      out_side: int = 448, seed: int = 2) -> dict[str, dict[str, float]]:
    """Accuracy (answered and overall) of ``analyze(scale="auto")`` on same-class mosaics."""
    rng = random.Random(seed)
    report = {}
    for zoom in zooms:
        right = answered = 0
        for _ in range(per_zoom):
            label = rng.choice(sorted(tiles))
            image = zoom_out({label: tiles[label]}, zoom, rng, out_side=out_side)
            analysis = predictor.analyze(image, scale="auto")
            answered += not analysis.abstained
            right += analysis.label == label
        report[f"{zoom:g}x"] = {"accuracy": right / per_zoom, "answered": answered / per_zoom,
                                "accuracy_when_answering": right / answered if answered else 0.0}
    return report


def originals(predictor, folder: Path) -> dict[str, float]:
    files = sorted(folder.glob("*/*.jp*g"))
    out = {"n": len(files)}
    for mode in ("auto", "native"):
        found = [predictor.analyze(f, scale=mode) for f in files]
        out[f"{mode}_accuracy"] = float(np.mean([a.label == f.parent.name for a, f in zip(found, files)]))
        out[f"{mode}_abstained"] = float(np.mean([a.abstained for a in found]))
    return out


def monuseg_error(reference, external: Path) -> dict[str, float]:
    """Estimated / annotated median nucleus diameter on MoNuSeg's images (hand-drawn outlines)."""
    paths = {Path(row["path"]).name: external / row["path"] for row in csv.DictReader(open(external / "index.csv"))}
    ratios = []
    for row in csv.DictReader(open(external / "monuseg-nuclei.csv")):
        if row["image"] in paths:
            relative, _ = estimate_relative_size(decode_image(paths[row["image"]]), reference)
            ratios.append(relative * reference.diameter_px[0] / float(row["median_equiv_diameter_px"]))
    ratios = np.asarray(ratios)
    return {"images": len(ratios), "median_ratio": float(np.median(ratios)),
            "median_abs_error": float(np.median(np.abs(ratios - 1))),
            "within_25": float(np.mean(np.abs(ratios - 1) <= 0.25))}


def cost(predictor, reference, example: Path, tiles: dict[str, list[Path]]) -> dict[str, float]:
    """Estimate time on a 768 px original; a 2000 x 2000 px training-scale mosaic (the most fields,
    so the slowest case) decoded from PNG and answered by the rule."""

    rgb = decode_image(example)
    estimate_relative_size(rgb, reference)
    times = []
    for _ in range(20):
        start = time.perf_counter()
        estimate_relative_size(rgb, reference)
        times.append(time.perf_counter() - start)
    big = zoom_out(tiles, 1.0, random.Random(3), out_side=2000)
    png = cv2.imencode(".png", big[..., ::-1])[1].tobytes()
    predictor.analyze(png)
    runs = []
    for _ in range(3):
        start = time.perf_counter()
        analysis = predictor.analyze(png)
        runs.append(time.perf_counter() - start)
    return {"estimate_768px_ms_median": 1000 * float(np.median(times)),
            "decode_and_analyze_2000px_s_median": float(np.median(runs)),
            "fields_2000px": analysis.fields.classified if analysis.fields else 0}


def markdown(report: dict, spec) -> str:
    """The model card section: what the scale rule is and what it achieves, measured."""
    def pct(value: float) -> str:
        return f"{100 * value:.1f}%"

    median, p10, p90 = spec.reference.diameter_px
    found = report["factor_found_224px"]
    rescaled = report["accuracy_after_rescale_224px"]
    rescaled_448 = report["accuracy_after_rescale_448px"]
    originals_ = report["originals_768px"]
    mono = report["monuseg"]
    cost_ = report["cost"]
    lines = [
        "Every image is first brought to the magnification the model learned: its nucleus size is "
        "estimated (haematoxylin by colour deconvolution, scale-space curve matched against curves "
        f"measured on training tiles; `src/imageclf/core/scale.py`) and compared with the training tiles' "
        f"(median nucleus diameter {median:.1f} px at 224 px, 10th-90th percentile {p10:.1f}-{p90:.1f}). One "
        f"224 px input stands for {spec.field_of_view_px} source pixels of an LC25000 photograph; "
        (f"its microns per pixel are {spec.microns_per_pixel:g} (config.json `scale.microns_per_pixel`; "
         f"{spec.microns_per_pixel_note})" if spec.microns_per_pixel else
         f"microns per pixel are unknown ({spec.microns_per_pixel_note})"),
        "",
        "| check (python -m training.evaluation.scale_check) | result |",
        "| --- | --- |",
        *(f"| test-split zoom-out {k}: factor found within +-25% | {pct(v['within'])} "
          f"(median error {100 * v['median_error']:+.1f}%) |" for k, v in found.items()),
        *(f"| accuracy after automatic rescaling, {k} zoom-out (224 px / 448 px mosaics) | "
          f"{pct(rescaled[k]['accuracy'])} / {pct(rescaled_448[k]['accuracy'])} |" for k in rescaled),
        f"| 30 full-size 768 px LC25000 originals, `auto` | {pct(originals_['auto_accuracy'])} right, "
        f"{pct(originals_['auto_abstained'])} abstained |",
        f"| the same, `native` (cut at their own resolution) | {pct(originals_['native_accuracy'])} right, "
        f"{pct(originals_['native_abstained'])} abstained |",
        f"| MoNuSeg hand-drawn outlines ({mono['images']} images): estimated / annotated diameter | "
        f"median {mono['median_ratio']:.2f}, median error {pct(mono['median_abs_error'])}, "
        f"{pct(mono['within_25'])} within +-25% |",
        f"| cost: estimate on a 768 px image | {cost_['estimate_768px_ms_median']:.1f} ms |",
        f"| cost: decode + answer a 2000 x 2000 px PNG ({cost_['fields_2000px']} fields) | "
        f"{cost_['decode_and_analyze_2000px_s_median']:.2f} s |",
        "",
        "Zoom-outs are mosaics of same-class test tiles shrunk 2-4x (the reference is measured on the "
        "train split only). 22 of the 30 originals belong to train-split groups: they check that every "
        "path gives the same answer, not accuracy.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=REPO / "hub_model")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--external", type=Path, required=True)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--markdown", type=Path, help="write the model card section here (e.g. hub_model/scale.md)")
    args = parser.parse_args(argv)
    predictor = Predictor(args.model)
    spec = predictor.model_config.scale
    test = split_tiles(args.data, args.manifest, split="test")
    report = {
        "factor_found_224px": zoom_out_check(spec, test, per_zoom=60),
        "factor_found_448px": zoom_out_check(spec, test, per_zoom=60, out_side=448),
        "accuracy_after_rescale_448px": zoom_out_accuracy(predictor, test),
        "accuracy_after_rescale_224px": zoom_out_accuracy(predictor, test, out_side=224),
        "originals_768px": originals(predictor, args.external / "lc25000-lung-768"),
        "monuseg": monuseg_error(spec.reference, args.external),
        "cost": cost(predictor, spec.reference, sorted((args.external / "lc25000-lung-768").glob("*/*"))[0], test),
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text(markdown(report, spec))


if __name__ == "__main__":
    main()
