"""What the precision rule measures: each candidate's served decisions beside Keras's, field by field.

A decision is a field's label (argmax) and whether the served refusal rule refuses it
(``imageclf.core.refusal.judge_fields``: colour, feature check, tissue gate, confidence floor),
as the Space's field loop makes it (``Predictor.classify_fields``: each image one field, its own
stain estimate where the model has a stain block) with the candidate engine in Keras's place.
``scripts/perf/runtimes.py`` scores its runtimes with the same :func:`served_decisions` and
:func:`agreement`, and times them with :func:`speed`.

The candidates (``CANDIDATES``) are made from the folder's ``model.keras`` by the export,
``training.export.runtime_export.export_runtime``, into a scratch folder (never the model folder):
float32 and bf16 are one set of float32 files (the bf16 policy's export) run with f32 or bf16
arithmetic; int8 is the int8 export (300 TRAIN tiles). ``training/export/precision_rule.py``
judges the figures.
"""
from __future__ import annotations

import copy
import platform
import shutil
import time
from pathlib import Path

import numpy as np

from imageclf.core.engine import FieldEngine
from imageclf.model.config import read_config
from imageclf.model.config_blocks import RUNTIME_FILES
from imageclf.model.openvino_engine import BF16_POLICY, OpenVinoEngine, cpu_flags, native_bf16
from imageclf.model.predictor import Predictor
from training.calibration.scale_reference import train_scale_reference
from training.calibration.temperature import expected_calibration_error
from training.data.samples import load_split, read_manifest
from training.export.precision_fields import ECE_BINS, Decisions, stress_row
from training.evaluation.stress import stress_sets
from training.export.runtime_export import export_runtime

# Candidate -> (export precision of its files, the engine's precision).
CANDIDATES = {"float32": (BF16_POLICY, "float32"), "bf16": (BF16_POLICY, "bf16"), "int8": ("int8", "int8")}


def served_decisions(predictor: Predictor, engine: FieldEngine, images, *, batch: int = 32) -> Decisions:
    """Each image as one field through the served field loop, with ``engine`` running the model."""
    served = copy.copy(predictor)   # the same spec, checks and preparation; another engine
    served.engine = engine
    table = served.classify_fields(list(images), batch=batch)
    return Decisions(table.probabilities, table.probabilities.argmax(1), ~table.answered)


def agreement(candidate: Decisions, reference: Decisions, labels: np.ndarray | None = None) -> dict:
    """Same label, same refusal, both (the decision); |dp|; with ``labels``, ECE (``ECE_BINS``) and accuracy."""
    same_label, same_refusal = candidate.label == reference.label, candidate.refused == reference.refused
    diff = np.abs(candidate.probabilities - reference.probabilities)
    out = {"label": float(same_label.mean()), "refusal": float(same_refusal.mean()),
           "decision": float((same_label & same_refusal).mean()), "max_dp": float(diff.max()),
           "mean_dp": float(diff.mean()), "refused": float(candidate.refused.mean())}
    if labels is not None:
        out |= {"ece": float(expected_calibration_error(candidate.probabilities, labels, bins=ECE_BINS)),
                "accuracy": float((candidate.label == labels).mean())}
    return out


def speed(calls: dict, tiles: np.ndarray, *, rounds: int, batch1: int) -> dict:
    """Median batch-1 ms and batch-32 fields/s per candidate, candidates interleaved per round."""
    one = {name: [] for name in calls}
    many = {name: [] for name in calls}
    for name, call in calls.items():   # warm-up: first calls build graphs and caches
        call(tiles[:1]), call(tiles[:32])
    for r in range(rounds):
        for name, call in calls.items():
            for i in range(batch1):
                start = time.perf_counter()
                call(tiles[(r * batch1 + i) % len(tiles)][None])
                one[name].append(1000 * (time.perf_counter() - start))
            start = time.perf_counter()
            call(tiles[(r * 32) % max(1, len(tiles) - 32):][:32])
            many[name].append(32 / (time.perf_counter() - start))
    return {name: {"batch1_ms": float(np.median(one[name])), "batch32_fields_s": float(np.median(many[name]))}
            for name in calls}


def linked_copy(folder: Path, dest: Path) -> Path:
    """``folder`` as symlinks in ``dest`` (no copies of the weights), minus its runtime files; config.json copied."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for path in folder.iterdir():
        if path.name not in (*RUNTIME_FILES, "config.json"):
            (dest / path.name).symlink_to(path.resolve())
    shutil.copy(folder / "config.json", dest / "config.json")
    return dest


def export_candidates(folder: Path, scratch: Path, data: Path, *, made_by: str) -> dict[str, Path]:
    """Each export precision's files, made from ``folder/model.keras`` into ``scratch/<precision>/``."""
    made = {}
    for precision in sorted({files for files, _ in CANDIDATES.values()}):
        out = linked_copy(folder, scratch / precision)
        export_runtime(out, precision=precision, data=data if precision == "int8" else None,
                       made_by=f"python -m training.export.runtime_export {folder} --precision {precision}"
                               + (f" --data {data}" if precision == "int8" else "") + f" (in {made_by})")
        made[precision] = out
    return made


def measure(folder: Path, *, data: Path, manifest: Path, external: Path, scratch: Path, made_by: str,
            tiles: int = 0, per_class: int = 100, photos: int = 60, rounds: int = 5, log=print) -> dict:
    """Every candidate's decisions against Keras's on the grouped TEST tiles and every stress field row."""
    reference = Predictor(folder, runtime="keras")
    exported = export_candidates(folder, scratch, data, made_by=made_by)
    engines = {"keras": reference.engine}
    for name, (files, precision) in CANDIDATES.items():
        spec = read_config(exported[files]).runtime
        engines[name] = OpenVinoEngine(exported[files] / spec.model_file, reference.feature_check,
                                       precision=precision, tissue_gate=reference.tissue_gate)
    test = [s for s in read_manifest(folder / "split_manifest.csv") if s.split == "test"]
    images, labels = load_split(data, test[:tiles] if tiles else test, class_ids=reference.class_ids,
                                size=reference.input_size)
    log(f"{len(images)} grouped TEST tiles; building the stress sets")
    sets = stress_sets(data=data, manifest=manifest, external=external, per_class=per_class, photos=photos,
                       scale_reference=train_scale_reference(data, manifest))
    report = {"cpu": cpu(), "native_bf16": native_bf16(), "model_keras": str(folder / "model.keras"),
              "sha256": dict(read_config(exported[BF16_POLICY]).runtime.sha256),
              "int8_sha256": dict(read_config(exported["int8"]).runtime.sha256),
              "arithmetic": {name: getattr(e, "arithmetic", "keras") for name, e in engines.items()},
              "fields": {"test": int(len(images)), "stress": int(sum(len(s.images) for s in sets))}, "candidates": {}}
    decided = {}
    for name, engine in engines.items():
        started = time.perf_counter()
        decided[name] = {"test": served_decisions(reference, engine, images)}
        decided[name] |= {s.name: served_decisions(reference, engine, s.images) for s in sets}
        fields = sum(len(d.label) for d in decided[name].values())
        log(f"{name}: {fields} fields in {time.perf_counter() - started:.0f} s")
    keras = decided.pop("keras")
    for name, by_set in decided.items():
        report["candidates"][name] = {
            "all": agreement(pooled(by_set), pooled(keras)), "test": agreement(by_set["test"], keras["test"], labels),
            "stress": [stress_row(s.name, by_set[s.name], keras[s.name]) for s in sets]}
    report["keras_test"] = agreement(keras["test"], keras["test"], labels)
    log("speed: candidates interleaved")
    calls = {name: getattr(engine, "forward", engine.run) for name, engine in engines.items()}
    report["speed"] = speed(calls, images, rounds=rounds, batch1=10)
    return report


def pooled(by_set: dict[str, Decisions]) -> Decisions:
    """Several sets' decisions as one, in order."""
    parts = list(by_set.values())
    return Decisions(*(np.concatenate([getattr(d, key) for d in parts])
                       for key in ("probabilities", "label", "refused")))


def cpu() -> str:
    """The CPU model, machine and the flags that decide bf16 / int8 speed (from /proc/cpuinfo)."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    wanted = sorted(f for f in cpu_flags() if f.startswith(("avx512", "amx")) or f in ("avx2", "avx_vnni", "fma"))
    return f"{model}; {platform.machine()}; flags: {' '.join(wanted)}"
