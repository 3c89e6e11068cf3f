"""Score generated pyramidal slides of the TCGA lung tiles with one or more model folders, side by side.

The 8 MoNuSeg TCGA lung tiles (``../shared/data/external-he/lung-tcga``: 5 adenocarcinoma, 3 squamous
cell carcinoma, 1000 px at 40x, about 0.25 um/px; CC BY-NC-SA, so the slides are written to a temporary
folder and never kept) become three Aperio-style slides at 0.25 um/px: all 8 tiles, the 5 aca tiles, the
3 scc tiles. Each is scored by ``imageclf.slides.scoring.score_slide`` (the one field loop, stain step
included when the model has one), and the verdict, the fields answered and refused (by code) and the
stain outcome are printed as a Markdown table (``--json`` also writes them).

Example:
    .venv/bin/python -m scripts.tcga_lung_slides runs/served-before hub_model
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

from imageclf.slides.scoring import score_slide
from imageclf.slides.slide_model import SlideModel
from scripts.perf.synthetic_slides import lung_mosaic, lung_tiles, write_slide

ROOT = Path(__file__).resolve().parents[1]
TCGA = ROOT.parent / "shared" / "data" / "external-he" / "lung-tcga"
MPP = 0.25
# (name, class folders, layout): tiles placed in reading order, glass between some of them.
SLIDES = (("all 8 tiles (5 aca, 3 scc)", ("lung_aca", "lung_scc"), ["LLL", "L.L", "LLL"]),
          ("5 aca tiles", ("lung_aca",), ["LL.", ".LL", "L.."]),
          ("3 scc tiles", ("lung_scc",), ["L.L", ".L."]))


def score_all(models: list[Path], root: Path) -> list[dict]:
    """One row per (slide, model): verdict, fields answered and refused by code, stain status."""
    rows = []
    loaded = [(folder, SlideModel.from_folder(folder)) for folder in models]
    with tempfile.TemporaryDirectory() as tmp:
        for name, classes, layout in SLIDES:
            tiles = [t for t, c in zip(lung_tiles(root), _classes(root), strict=True) if c in classes]
            path = write_slide(Path(tmp) / f"{len(rows)}.svs", lung_mosaic(tiles, layout), mpp=MPP)
            for folder, model in loaded:
                result = score_slide(path, model)
                verdict, fields = result.verdict, result.fields
                reasons = Counter(r.value for r in fields.reasons if r is not None)
                answered = fields.answered
                rows.append({"slide": name, "model": str(folder), "verdict": verdict.label or f"refused: {verdict.abstain_code}",
                             "confidence": verdict.confidence, "fields": len(fields), "answered": int(answered.sum()),
                             "refused": dict(reasons), "refused_share": 1 - float(answered.mean()) if len(fields) else None,
                             "answered_as": dict(Counter(model.spec.class_ids[int(t)] for t in fields.top[answered])),
                             "stain": None if result.stain is None else result.stain.status})
    return rows


def _classes(root: Path) -> list[str]:
    """The class folder of each tile, in the order ``lung_tiles`` reads them."""
    return [p.parent.name for p in sorted(root.glob("*/*.jpg"))]


def markdown(rows: list[dict]) -> str:
    lines = ["| slide | model | verdict | tissue fields | refused (by code) | answered as | stains |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        share = "" if r["refused_share"] is None else f"{100 * r['refused_share']:.0f}% "
        lines.append(f"| {r['slide']} | `{r['model']}` | {r['verdict']}"
                     + ("" if r["confidence"] is None else f" ({100 * r['confidence']:.0f}%)")
                     + f" | {r['fields']} | {share}{r['refused'] or ''} | {r['answered_as']} | {r['stain'] or 'not normalised'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.tcga_lung_slides", description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path, help="model folders (e.g. the one served before and hub_model)")
    parser.add_argument("--tcga", type=Path, default=TCGA, help="the lung-tcga folder (lung_aca/, lung_scc/)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    if not args.tcga.is_dir():
        print(f"{args.tcga} not found (the shared data beside the project).", file=sys.stderr)
        return 2
    rows = score_all(args.models, args.tcga)
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
