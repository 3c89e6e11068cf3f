"""Golden answers: the JSON of the 30 full-size LC25000 originals and of the hostile corpus
(``answers.json``), and of the 115 other-lab images of ``external-he`` (``external.json``: TCGA
lung and other organs, which exercise the feature check and the share-of-fields refusal), as the
bundled model gave them before the serving core was restructured (issue 17). The comparison
(``tests/test_golden_answers.py``) holds every later change of the core to the same bytes.

Regenerate only for a deliberate change of behaviour, and say so in the commit:
``.venv/bin/python -m tests.support.golden``. ``--compare OLD_DIR`` (a copy of ``golden/`` made before)
prints what changed, per group of cases, as a Markdown table.
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from imageclf.core.imaging import ImageError, decode_image
from imageclf.model.predictor import Predictor
from tests.conftest import HUB_MODEL, SHARED_DATA
from tests.support.hostile_corpus import corpus, with_limits

ANSWERS = Path(__file__).resolve().parent / "golden" / "answers.json"
EXTERNAL = Path(__file__).resolve().parent / "golden" / "external.json"
EXTERNAL_SETS = ("lung-tcga/*/*", "nonlung/*/*")
# Keys added to the result after the golden file was made (additive; checked by their own tests).
ADDED_KEYS = ("abstain_code",)


def answers(predictor: Predictor, originals: Path) -> dict[str, Any]:
    """{case: result JSON (or {"error": sentence})} for the originals (``auto``) and the hostile
    corpus (decoded under its ``LIMITS``; ``auto`` and ``native``)."""
    out: dict[str, Any] = {}
    for path in sorted(originals.glob("*/*.jp*g")):
        out[f"originals/{path.parent.name}/{path.name}"] = _json(predictor.analyze(path))
    for case in corpus():
        try:
            rgb = decode_image(case.data)
        except ImageError as err:
            out[f"hostile/{case.name}"] = {"error": str(err)}
            continue
        for scale in ("auto", "native"):
            out[f"hostile/{case.name}/{scale}"] = _json(predictor.analyze(rgb, scale=scale))
    return out


def external_answers(predictor: Predictor, external_he: Path) -> dict[str, Any]:
    """{path under external-he: result JSON} for its lung and other-organ images (``auto``)."""
    paths = sorted(p for pattern in EXTERNAL_SETS for p in external_he.glob(pattern)
                   if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".tif", ".tiff"))
    return {str(path.relative_to(external_he)): _json(predictor.analyze(path)) for path in paths}


def dumps(data: dict[str, Any]) -> str:
    """The file's exact text: one canonical form, so a comparison is of bytes."""
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


def _json(analysis: Any) -> dict[str, Any]:
    return {key: value for key, value in analysis.to_json().items() if key not in ADDED_KEYS}


def outcome(answer: dict[str, Any]) -> str:
    """One case's answer in a word: its class id, ``refused: <code>``, or ``error``."""
    if "error" in answer:
        return "error"
    return answer["label"] if not answer["abstained"] else f"refused: {answer.get('abstain_code') or 'no code'}"


def compare(old: dict[str, Any], new: dict[str, Any]) -> str:
    """Markdown: per group (originals, hostile corpus, TCGA lung, each other organ), how many cases
    keep their outcome, and each kind of change with its count."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for case in sorted(set(old) & set(new)):
        parts = case.split("/")
        group = parts[0] if parts[0] in ("originals", "hostile") else "/".join(parts[:2])
        groups.setdefault(group, []).append((outcome(old[case]), outcome(new[case])))
    lines = ["| cases | n | same outcome | answered before -> after | changes |", "|---|---|---|---|---|"]
    for group, pairs in groups.items():
        moves = Counter(f"{a} -> {b}" for a, b in pairs if a != b)
        answered = (sum(not a.startswith(("refused", "error")) for a, _ in pairs),
                    sum(not b.startswith(("refused", "error")) for _, b in pairs))
        lines.append(f"| {group} | {len(pairs)} | {sum(a == b for a, b in pairs)} | {answered[0]} -> {answered[1]} | "
                     + "; ".join(f"{k} ({v})" for k, v in moves.most_common()) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Record the golden answers, or compare them with an older copy.")
    parser.add_argument("--compare", type=Path, default=None, help="a folder holding older answers.json/external.json")
    args = parser.parse_args()
    if args.compare is not None:
        for name in (ANSWERS.name, EXTERNAL.name):
            print(compare(json.loads((args.compare / name).read_text()), json.loads((ANSWERS.parent / name).read_text())))
        raise SystemExit(0)
    model = Predictor(HUB_MODEL, runtime="keras")   # the engine the recording was made with
    with pytest.MonkeyPatch.context() as patch:     # the size limits the hostile corpus was built against
        with_limits(patch)
        ANSWERS.write_text(dumps(answers(model, SHARED_DATA / "external-he" / "lc25000-lung-768")))
    EXTERNAL.write_text(dumps(external_answers(model, SHARED_DATA / "external-he")))
