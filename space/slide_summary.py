"""The Slide tab's summary panel: what a reader wants first from a scored slide's summary.json.

Verdict and reason; tissue area in mm²; area and share of each class (the answered fields, whatever
the slide's verdict, with that said); fields answered and refused, by reason code; the microns per
pixel and where they came from; the runtime. Presentation only: every number is summary.json's
(the raw JSON stays one click away, under an accordion).

Example:
    >>> print(summary_markdown(json.loads(Path("out/CMU-1-Small-Region/summary.json").read_text())))
    ### Slide verdict: not recognised (`fields_refused`)
    ...
"""
from __future__ import annotations

from typing import Any

__all__ = ["summary_markdown"]


def summary_markdown(summary: dict[str, Any]) -> str:
    """Markdown for the panel above the viewer."""
    verdict, fields, scale = summary["verdict"], summary["fields"], summary["scale"]
    model = summary["model"]
    names = dict(zip(model.get("classes", []), model.get("names", []), strict=False))
    if verdict.get("abstained"):
        lines = [f"### Slide verdict: not recognised (`{verdict.get('abstain_code')}`)",
                 str(verdict.get("abstain_reason") or "")]
    else:
        lines = [f"### Slide verdict: {verdict.get('name')} — {100 * float(verdict.get('confidence') or 0):.0f}%",
                 f"Mean over the {fields.get('answered', 0)} answered fields."]
    tissue = (summary.get("tissue") or {}).get("area_mm2")
    lines.append(f"**Tissue:** {_mm2(tissue)} found on the thumbnail; {fields.get('classified', 0)} fields scored "
                 f"({fields.get('answered', 0)} answered, {fields.get('abstained', 0)} not recognised).")
    lines += _composition(summary.get("composition"), names, refused=bool(verdict.get("abstained")))
    reasons = fields.get("reasons") or {}
    if reasons:
        lines.append("**Not recognised, by reason:** " + ", ".join(
            f"`{code}` {count}" for code, count in sorted(reasons.items(), key=lambda item: -item[1])))
    mpp = scale.get("um_per_px")
    lines.append(f"**Scale:** {'unknown' if mpp is None else f'{mpp:.3f} µm/px'} from {scale.get('source')} "
                 f"({scale.get('detail')}); read at level {scale.get('level_read')}, the model works at "
                 f"{scale.get('model_um_per_px')} µm/px.")
    timings = summary.get("timings") or {}
    if "total_s" in timings:
        rate = f", {timings['fields_per_s']:.1f} fields/s" if timings.get("fields_per_s") else ""
        lines.append(f"**Runtime:** {timings['total_s']:.1f} s{rate} ({model.get('runtime')}).")
    return "\n\n".join(line for line in lines if line)


def _composition(composition: dict[str, Any] | None, names: dict[str, str], *, refused: bool) -> list[str]:
    """A small table: area and share of each class and of the refused fields."""
    if not composition:
        return []
    rows = ["| | area | share |", "|---|---:|---:|"]
    for cid, name in names.items():
        part = composition.get(cid) or {}
        rows.append(f"| {name} | {_mm2(part.get('area_mm2'))} | {_share(part.get('share'))} |")
    refused_part = composition.get("not_recognised") or {}
    rows.append(f"| Not recognised | {_mm2(refused_part.get('area_mm2'))} | {_share(refused_part.get('share'))} |")
    answered = any((composition.get(cid) or {}).get("share") for cid in names)
    note = ("The slide as a whole is not recognised: the class rows are the fields answered one by one, shown "
            "so nothing is hidden, not an answer for the slide." if refused and answered else "")
    return ["**Composition by area** (answered fields by class, refused fields apart; overlapping field edges "
            "count once; `summary.json` `composition.basis` says exactly how)", "\n".join(rows), note]


def _mm2(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f} mm²"


def _share(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f}%"
