"""The optimised CPU copy of ``model.keras``: one graph, both outputs, recorded in config.json.

``model.keras`` stays the canonical model (training, Grad-CAM, the fallback). This command makes
from it an OpenVINO IR graph whose one forward pass gives the ``probabilities`` and the pooled
``features`` (the feature check's input), int8 by NNCF post-training quantisation on grouped
TRAIN tiles, with every MatMul and ReduceMean (the softmax head and the global pooling) kept in
float: quantising the head sends every tile to one class (its weights span 0.3 to ~12,000). It
then measures the copy against Keras on the grouped TEST split, decision by decision through the
serving refusal rule, and writes config.json's ``runtime`` block (``imageclf.model.blocks.RuntimeSpec``):
file sha256s, the source ``model.keras`` sha256, the calibration and the agreement.
``imageclf.model.openvino_engine`` serves it; ``scripts/perf/runtimes.py`` compares it with the
other CPU runtimes.

Usage:
    ```bash
    $ python -m training.export.runtime_export hub_model                       # openvino-int8
    $ python -m training.export.runtime_export hub_model --format openvino-f32
    ```
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.metadata
import io
import tempfile
from pathlib import Path

import numpy as np

from imageclf.core.engine import FieldEngine, FieldOutputs
from imageclf.core.refusal import RefusalRule, judge_fields
from imageclf.model.blocks import RuntimeSpec
from imageclf.model.config import write_config
from imageclf.model.openvino_engine import FORMATS, file_sha256, load_engine
from imageclf.model.predictor import Predictor
from imageclf.settings import quiet_tensorflow
from training.calibration.temperature import expected_calibration_error
from training.data.samples import load_split, read_manifest

quiet_tensorflow()   # before Keras imports TensorFlow
import keras  # noqa: E402
import nncf  # noqa: E402
import openvino as ov  # noqa: E402
import tensorflow as tf  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "lc25000-lung-224"
DEFAULT_MANIFEST = ROOT / "training" / "splits" / "lc25000-lung-grouped.csv"
GRAPHS = {"openvino-int8": "model_openvino_int8.xml", "openvino-f32": "model_openvino_f32.xml"}
FLOAT_OPS = ("MatMul", "ReduceMean")   # kept in float by the quantiser: the head and the pooling
__all__ = ["GRAPHS", "agreement", "calibration_tiles", "export_runtime", "export_saved_model", "openvino_graph",
           "quantise", "run_batched", "split_tiles"]


def export_saved_model(model: keras.Model, directory: str | Path, *, feature_layer: str = "features") -> Path:
    """A TF SavedModel of ``model`` whose ``serve`` signature returns ``probabilities`` and ``features``
    (the pooled layer ``feature_layer``) from one pass; uint8 N x H x W x 3 in."""
    two = keras.Model(model.inputs, {"probabilities": model.outputs[0],
                                     "features": model.get_layer(feature_layer).output})
    archive = keras.export.ExportArchive()
    archive.track(two)

    @tf.function(input_signature=[tf.TensorSpec([None, *model.input_shape[1:]], tf.uint8, name="image")])
    def serve(image):
        out = two(image, training=False)
        return {"probabilities": out["probabilities"], "features": out["features"]}

    archive.add_endpoint("serve", serve)
    with contextlib.redirect_stdout(io.StringIO()):   # Keras prints every captured variable
        archive.write_out(str(directory))
    return Path(directory)


def openvino_graph(saved_model: str | Path) -> ov.Model:
    """The SavedModel as an OpenVINO model (float32, dynamic batch)."""
    return ov.convert_model(str(saved_model))


def quantise(model: ov.Model, calibration: np.ndarray) -> ov.Model:
    """int8 post-training quantisation (NNCF) on ``calibration`` tiles, MatMul/ReduceMean in float."""
    items = [tile[None] for tile in np.asarray(calibration, np.uint8)]
    return nncf.quantize(model, nncf.Dataset(items), subset_size=len(items),
                         ignored_scope=nncf.IgnoredScope(types=list(FLOAT_OPS)))


def split_tiles(split: str, *, class_ids: list[str], size: tuple[int, int], data: Path = DEFAULT_DATA,
                manifest: Path = DEFAULT_MANIFEST, limit: int | None = None, seed: int = 0,
                cache_dir: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 tiles, class indices) of one split of the manifest, decoded as serving does; ``limit``:
    a seeded random subset, in manifest order."""
    samples = [s for s in read_manifest(manifest) if s.split == split]
    if limit is not None and limit < len(samples):
        keep = np.sort(np.random.default_rng(seed).choice(len(samples), limit, replace=False))
        samples = [samples[i] for i in keep]
    tiles, labels = load_split(data, samples, class_ids=class_ids, size=size, cache_dir=cache_dir)
    return np.asarray(tiles), labels


def calibration_tiles(n: int, *, seed: int = 0, **where) -> tuple[np.ndarray, str]:
    """``n`` seeded TRAIN tiles and a sentence saying which, for config.json."""
    tiles, _ = split_tiles("train", limit=n, seed=seed, **where)
    manifest = Path(where.get("manifest", DEFAULT_MANIFEST))
    return tiles, (f"{len(tiles)} tiles of the grouped TRAIN split ({manifest.name}, seed {seed}); NNCF "
                   f"{importlib.metadata.version('nncf')} post-training int8, {' and '.join(FLOAT_OPS)} "
                   "(the softmax head and the pooling) kept in float")


def run_batched(engine: FieldEngine, tiles: np.ndarray, *, batch: int = 32) -> FieldOutputs:
    """One engine's outputs for many tiles, ``batch`` at a time."""
    parts = [engine.run(tiles[i:i + batch]) for i in range(0, len(tiles), batch)]
    return FieldOutputs.concat(parts, classes=parts[0].probabilities.shape[1] if parts else 0)


def agreement(tiles: np.ndarray, labels: np.ndarray, reference: FieldOutputs, candidate: FieldOutputs,
              rule: RefusalRule) -> dict:
    """How a candidate's decisions compare with the reference's, tile by tile, through the serving
    refusal rule: same label, same abstention (refused or not), same refusal code; probability
    differences; ECE (15 bins) and accuracy of both."""
    ref_codes = judge_fields(tiles, reference.probabilities, reference.feature_scores, rule)
    new_codes = judge_fields(tiles, candidate.probabilities, candidate.feature_scores, rule)
    same_label = reference.probabilities.argmax(1) == candidate.probabilities.argmax(1)
    same_abstain = np.array([(a is None) == (b is None) for a, b in zip(ref_codes, new_codes, strict=True)])
    diff = np.abs(reference.probabilities - candidate.probabilities)
    out = {"tiles": len(tiles), "decisions": float(np.mean(same_label & same_abstain)),
           "labels": float(np.mean(same_label)), "abstentions": float(np.mean(same_abstain)),
           "codes": float(np.mean([a == b for a, b in zip(ref_codes, new_codes, strict=True)])),
           "abstained": float(np.mean([c is not None for c in new_codes])),
           "abstained_keras": float(np.mean([c is not None for c in ref_codes])),
           "max_abs_dp": float(diff.max()), "mean_abs_dp": float(diff.mean()),
           "ece": expected_calibration_error(candidate.probabilities, labels),
           "ece_keras": expected_calibration_error(reference.probabilities, labels),
           "accuracy": float(np.mean(candidate.probabilities.argmax(1) == labels)),
           "accuracy_keras": float(np.mean(reference.probabilities.argmax(1) == labels))}
    if reference.feature_scores is not None and candidate.feature_scores is not None:
        out["max_abs_feature_score_diff"] = float(np.abs(reference.feature_scores - candidate.feature_scores).max())
    return {key: round(value, 6) if isinstance(value, float) else value for key, value in out.items()}


def export_runtime(folder: str | Path, *, fmt: str = "openvino-int8", data: Path = DEFAULT_DATA,
                   manifest: Path = DEFAULT_MANIFEST, calibration: int = 300, seed: int = 0,
                   test_limit: int | None = None, cache_dir: Path | None = None,
                   inference_precision: str = "f32") -> RuntimeSpec:
    """Write the ``fmt`` graph into ``folder`` beside ``model.keras``, measure it against Keras on
    the TEST split and record both in config.json; returns the new ``runtime`` block."""
    folder = Path(folder)
    keras_side = Predictor(folder, runtime="keras")
    config = keras_side.model_config
    where = {"class_ids": list(keras_side.class_ids), "size": keras_side.input_size, "data": data,
             "manifest": manifest, "cache_dir": cache_dir}
    feature_layer = config.feature_ood.feature_layer if config.feature_ood else "features"
    with tempfile.TemporaryDirectory() as tmp:
        graph = openvino_graph(export_saved_model(keras_side.model, Path(tmp) / "saved", feature_layer=feature_layer))
    note = "float32 graph, no quantisation"
    if fmt == "openvino-int8":
        tiles, note = calibration_tiles(calibration, seed=seed, **where)
        graph = quantise(graph, tiles)
    for old in (config.runtime.files if config.runtime else {}):   # a previous format's files go
        (folder / old).unlink(missing_ok=True)
    xml = folder / GRAPHS[fmt]
    ov.save_model(graph, str(xml), compress_to_fp16=False)
    files = {p.name: file_sha256(p) for p in (xml, xml.with_suffix(".bin"))}
    versions = {"openvino": importlib.metadata.version("openvino"), "nncf": importlib.metadata.version("nncf"),
                "tensorflow": tf.__version__, "keras": keras.__version__}
    spec = RuntimeSpec(format=fmt, files=files, source_sha256=file_sha256(folder / config.model_file),
                       inference_precision=inference_precision, calibration=note, made_with=versions)
    tiles, labels = split_tiles("test", limit=test_limit, seed=seed, **where)
    engine = load_engine(spec, folder, keras_side.feature_check, model_file=config.model_file)
    measured = agreement(tiles, labels, run_batched(keras_side.engine, tiles), run_batched(engine, tiles),
                         keras_side.spec.refusal)
    spec = dataclasses.replace(spec, agreement={"split": f"grouped TEST ({manifest.name})", **measured})
    write_config(folder, dataclasses.replace(config, runtime=spec))
    return spec


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the optimised CPU runtime copy of model.keras.")
    parser.add_argument("folder", type=Path, help="model folder (model.keras + config.json)")
    parser.add_argument("--format", choices=FORMATS, default="openvino-int8")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
    parser.add_argument("--calibration", type=int, default=300, help="TRAIN tiles for int8 calibration")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-limit", type=int, default=None, help="TEST tiles for the agreement (default all)")
    parser.add_argument("--precision", choices=("f32", "bf16"), default="f32",
                        help="inference precision asked of OpenVINO for what is not int8")
    parser.add_argument("--cache-dir", type=Path, default=None, help="keep decoded tiles here (.npy)")
    args = parser.parse_args(argv)
    spec = export_runtime(args.folder, fmt=args.format, data=args.data, manifest=args.manifest,
                          calibration=args.calibration, seed=args.seed, test_limit=args.test_limit,
                          cache_dir=args.cache_dir, inference_precision=args.precision)
    sizes = ", ".join(f"{name} {(args.folder / name).stat().st_size / 1e6:.1f} MB" for name in spec.files)
    print(f"{spec.format}: {sizes}")
    print("agreement with Keras:", spec.agreement)


if __name__ == "__main__":
    main()
