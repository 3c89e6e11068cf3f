"""Score whole-slide images (or a cohort of them) at the model's physical scale.

For each input, ``OUT/<slide stem>/`` gets fields.csv, fields.geojson (QuPath detections),
heatmap.png, tissue.png and summary.json (a plain PNG/JPEG/TIFF image: analysis.json and
summary.json); ``OUT/run.jsonl`` records every slide of every run. Slides whose outputs are
complete are skipped, so rerunning the same command finishes an interrupted run. A slide that
cannot be scored gets ``error.json`` with the reason, and the others are still scored. summary.json
and every run.jsonl line carry the run metadata (code version, package versions, the model's revision
and sha256).

Runs on a local Dask cluster of ``--workers`` processes (default: one per four cores; the per-slide
work is ``imageclf.slides.cohort.process``, spread by ``imageclf.slides.dask_run``), on an existing
cluster with ``--scheduler ADDRESS``, or in this process with ``--workers 0``. ``--mpp`` is parsed by
the one scale parser (``imageclf.core.request.parse_scale``): ``0.25``, ``0.25 um/px`` or ``40x``.

Example:
    .venv/bin/python -m scripts.score_slides ../shared/data/wsi/CMU-1-Small-Region.svs --out slides-out
    .venv/bin/python -m scripts.score_slides slides/ --out slides-out --workers 4
    .venv/bin/python -m scripts.score_slides slides/ --out slides-out --scheduler tcp://10.0.0.5:8786
    .venv/bin/python -m scripts.score_slides scan.tif --out slides-out --mpp 0.25 --workers 0
    .venv/bin/python -m scripts.score_slides scan.tif --out slides-out --mpp 40x --workers 0

Exit status: 0 when every input was scored or skipped, 1 when any failed, 2 for a bad option.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from imageclf.core.request import MPP_RANGE, parse_scale
from imageclf.errors import ModelError, first_line
from imageclf.model.config import read_config
from imageclf.settings import SETTINGS
from imageclf.slides.cohort import RunOptions, plan_jobs, run_serial
from imageclf.slides.dask_run import default_workers, run_dask
from imageclf.slides.slide_model import check_model

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m scripts.score_slides", description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="slide files or folders of slides")
    parser.add_argument("--out", type=Path, required=True, help="output folder (one sub-folder per slide)")
    parser.add_argument("--mpp", default=None, help=f"the scale of every input, overriding the metadata: microns "
                                                    f"per level-0 pixel ({MPP_RANGE[0]:g}-{MPP_RANGE[1]:g}; '0.25' "
                                                    f"or '0.25 um/px') or a magnification ('40x')")
    parser.add_argument("--model", type=Path, default=SETTINGS.model_dir or ROOT / "hub_model",
                        help="model folder (default: MODEL_DIR, else hub_model/)")
    parser.add_argument("--level", type=int, default=None,
                        help="read this pyramid level (default: the level nearest above the model's scale)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=None,
                       help=f"local Dask worker processes (default {default_workers()}; 0: in this process)")
    where.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help="address of a running Dask scheduler (e.g. tcp://host:8786)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def describe(record: dict) -> str:
    if record["status"] == "failed":
        return f"failed   {record['out']}: {record.get('error')}"
    if record["status"] == "skipped":
        return f"skipped  {record['out']} (outputs complete)"
    fields = "" if record.get("fields") is None else f", {record['fields']} fields"
    return (f"scored   {record['out']}: {record['verdict']} (mpp from {record['mpp_source']}{fields}, "
            f"{record['seconds']:.1f} s)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        # --mpp is the command line's spelling of the one scale option ("0.25", "0.25 um/px", "40x").
        scale = None if args.mpp is None else parse_scale(args.mpp, read_config(args.model).scale, what="--mpp")
        if args.workers is not None and args.workers < 0:
            raise ValueError("--workers must be 0 or more.")
    except (ModelError, ValueError) as err:
        print(f"error: {first_line(err)}", file=sys.stderr)
        return 2
    options = RunOptions(model_folder=args.model.resolve(), scale=scale, level=args.level)
    jobs = plan_jobs(args.inputs, args.out)
    if not jobs:
        print("error: no slide or image files in the inputs.", file=sys.stderr)
        return 2
    try:
        if args.workers == 0:
            records = run_serial(jobs, options, progress=not args.quiet)
        else:
            check_model(read_config(options.model_folder))  # fail here, once, before starting a cluster
            records = run_dask(jobs, options, workers=args.workers, scheduler=args.scheduler,
                               progress=not args.quiet)
    except ModelError as err:
        print(f"error: {first_line(err)}", file=sys.stderr)
        return 2
    for record in sorted(records, key=lambda r: r["out"]):
        print(describe(record))
    counts = {status: sum(r["status"] == status for r in records) for status in ("scored", "skipped", "failed")}
    print(f"{counts['scored']} scored, {counts['skipped']} skipped, {counts['failed']} failed; outputs in {args.out}")
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
