"""Export the optimised CPU runtime beside ``model.keras``: one OpenVINO graph, pinned in config.json.

``model.keras`` stays the canonical file (plain Keras users load it). This step makes, from that
file and nothing else, a graph with the two outputs serving needs from one forward pass:
the calibrated probabilities and the pooled features the feature check scores. The graph takes the
same raw RGB uint8 input as ``model.keras`` (the scaling layers go with it).

1. Keras -> TensorFlow SavedModel (``model.export``; tf2onnx/ONNX were not needed).
2. SavedModel -> OpenVINO IR (``ov.convert_model``; weights kept float32, not fp16).
3. ``--precision int8``: post-training quantisation with NNCF, calibrated on ``--calibration``
   tiles of the TRAIN split of the folder's ``split_manifest.csv`` (seeded). The classifier head
   (MatMul) and the global average pool (ReduceMean) stay float: the head's weights span about
   0.3 to 12,000 (feature scaling is folded in), so int8 there sends every tile to one class
   (``../shared/notes/cpu-runtime-probe.md``).
4. Write ``model_openvino.xml`` + ``.bin`` and config.json's ``runtime`` block with both sha256s.

Usage: what ``make train`` runs (seconds; docs/operations.md has the measured choice of float32),
the bf16 policy (the same files; ``training/export/precision_rule.py`` runs this and records its
verdict), then int8 as measured there (about 1 minute on 2 cores, calibration included):
    .venv/bin/python -m training.export.runtime_export hub_model --precision float32
    .venv/bin/python -m training.export.runtime_export hub_model --precision bf16-where-native
    .venv/bin/python -m training.export.runtime_export hub_model --data ../shared/data/lc25000-lung-224 --precision int8
"""
from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from imageclf.hashing import file_sha256
from imageclf.model.config_blocks import RUNTIME_FILES, RuntimeSpec
from imageclf.model.config import read_config, write_config
from imageclf.model.keras_engine import with_features
from imageclf.model.openvino_engine import BF16_POLICY
from imageclf.settings import quiet_tensorflow
from training.data.samples import load_split, read_manifest

quiet_tensorflow()   # before Keras imports TensorFlow
import keras  # noqa: E402
import openvino as ov  # noqa: E402

# "auto": float32 weights, arithmetic as OpenVINO picks for the CPU (bf16 where it has AVX512-BF16
# or AMX, else float32); "float32": float32 forced; "bf16-where-native": the same float32 files, with
# bf16 arithmetic only where the CPU has it natively and the precision rule passed bf16 on them
# (training/export/precision_rule.py records that; until then the engine runs f32); "int8": quantised (below).
PRECISIONS = ("int8", "auto", "float32", BF16_POLICY)
# Layers kept in float when quantising: the head's matrix product and the pooling before it.
FLOAT_OPS = ("MatMul", "ReduceMean")


def to_saved_model(model: keras.Model, path: Path) -> Path:
    """A Keras model as a TensorFlow SavedModel (the graph every converter starts from)."""
    model.export(str(path), format="tf_saved_model", verbose=False)
    return path


def to_openvino(model: keras.Model) -> ov.Model:
    """A Keras model as an OpenVINO model, through a SavedModel (float32 weights)."""
    with tempfile.TemporaryDirectory() as tmp:
        return ov.convert_model(str(to_saved_model(model, Path(tmp) / "saved_model")))


def calibration_tiles(folder: Path, data: Path, *, count: int, seed: int) -> np.ndarray:
    """``count`` TRAIN-split tiles (uint8, at the model's input size), drawn with ``seed``."""
    config = read_config(folder)
    train = [s for s in read_manifest(folder / "split_manifest.csv") if s.split == "train"]
    if not train:
        raise SystemExit(f"{folder / 'split_manifest.csv'} lists no train tiles to calibrate on.")
    picked = [train[i] for i in sorted(np.random.default_rng(seed).choice(len(train), min(count, len(train)),
                                                                          replace=False))]
    images, _ = load_split(data, picked, class_ids=config.labels, size=tuple(config.input_size))
    return images


def quantize_int8(model: ov.Model, tiles: np.ndarray, *, float_names: Sequence[str] = (),
                  mixed: bool = False) -> ov.Model:
    """Post-training int8 quantisation (NNCF), head and pooling kept float.

    ``float_names``: more operations kept float, by name; ``mixed``: NNCF's MIXED preset
    (asymmetric activations). The export uses neither; ``scripts/perf/int8_variants.py`` measures them.
    """
    import nncf  # deferred: only int8 export needs it (about 3 s to import)

    dataset = nncf.Dataset(list(tiles), lambda tile: tile[None])
    options = {"preset": nncf.QuantizationPreset.MIXED} if mixed else {}
    return nncf.quantize(model, dataset, subset_size=len(tiles),
                         ignored_scope=nncf.IgnoredScope(types=list(FLOAT_OPS), names=list(float_names)), **options)


def export_runtime(folder: str | Path, *, precision: str, data: str | Path | None = None,
                   calibration: int = 300, seed: int = 0, made_by: str | None = None) -> RuntimeSpec:
    """Write the runtime files into ``folder`` and its ``runtime`` block into ``config.json``."""
    folder = Path(folder)
    if precision not in PRECISIONS:
        raise SystemExit(f"--precision must be one of {', '.join(PRECISIONS)}.")
    config = read_config(folder)
    if config.feature_ood is None:
        raise SystemExit("config.json has no feature_ood block: the runtime needs its feature layer's name.")
    model = keras.saving.load_model(folder / config.model_file, compile=False, safe_mode=True)
    graph = to_openvino(with_features(model, config.feature_ood.feature_layer))
    note = None
    if precision == "int8":
        if data is None:
            raise SystemExit("--precision int8 needs --data (the dataset the TRAIN split's tiles are in).")
        tiles = calibration_tiles(folder, Path(data), count=calibration, seed=seed)
        note = (f"NNCF post-training quantisation on {len(tiles)} TRAIN-split tiles (seed {seed}); "
                f"{' and '.join(FLOAT_OPS)} kept float")
        graph = quantize_int8(graph, tiles)
    xml, weights = (folder / name for name in RUNTIME_FILES)
    ov.save_model(graph, str(xml), compress_to_fp16=False)
    spec = RuntimeSpec(format="openvino", precision=precision, model_file=xml.name,
                       sha256={path.name: file_sha256(path) for path in (xml, weights)},
                       made_by=made_by, calibration=note)
    write_config(folder, dataclasses.replace(config, runtime=spec))
    return spec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="model folder with model.keras, config.json and split_manifest.csv")
    parser.add_argument("--precision", choices=PRECISIONS, default="int8")
    parser.add_argument("--data", help="dataset root of the TRAIN split (int8 calibration)")
    parser.add_argument("--calibration", type=int, default=300, help="TRAIN tiles to calibrate int8 on")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    made_by = "python -m training.export.runtime_export " + shlex.join(sys.argv[1:] if argv is None else argv)
    spec = export_runtime(args.folder, precision=args.precision, data=args.data, calibration=args.calibration,
                          seed=args.seed, made_by=made_by)
    for name, digest in spec.sha256.items():
        size = (Path(args.folder) / name).stat().st_size / 1e6
        print(f"{name}: {size:.1f} MB, sha256 {digest[:16]}...")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
