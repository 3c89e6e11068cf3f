"""The CPU runtimes for the bundled model, side by side in one run: speed, memory, agreement.

Candidates (each gives the two outputs serving needs: probabilities and pooled features):
- ``keras``: the served Keras model, as ``KerasEngine`` runs it (``predict_on_batch``);
- ``keras-traced``: the same model in one traced serving function (``tf.function``);
- ``keras-xla``: the same, XLA-compiled (``jit_compile=True``);
- ``openvino-f32``: converted from ``model.keras`` by this run (into ``--graphs``), float32 forced;
- ``openvino-auto``: the same graph, precision left to OpenVINO (bf16 where the CPU has it);
- ``openvino-int8``: quantised by this run as ``training/export/runtime_export.py --precision int8``
  does it (NNCF, 300 TRAIN tiles, head and pooling kept float);
- ``onnxruntime-f32`` / ``-int8`` and ``litert-f32`` / ``-int8``: made by this run from the same
  SavedModel and the same 300 calibration tiles (``scripts/perf/other_runtimes.py`` says how).
A peer sets the scale: the batch-1 forward of seed project B's CNN (``training/models/peers.py``,
29.6 M parameters, Keras), timed in the same rounds.

Speed is measured in rounds that visit every candidate in turn, so outside load hits all alike:
batch-1 latency (median over calls) and batch-32 fields/s. Cold load (import + load + first
answer) and peak RSS come from a fresh process per candidate. Agreement is measured against
``keras`` on the grouped TEST tiles of ``hub_model/split_manifest.csv``. A decision is the label
and whether the field is refused, as the served field loop makes it
(``training.export.precision_measure.served_decisions``, shared with the precision rule):
refusal by ``imageclf.core.refusal.judge_fields`` (colour, feature check, tissue gate, confidence).
The script also gives max and mean |p - p_keras| and the ECE (15 bins).

Usage (about 25 minutes on 2 cores for the 2,258 test tiles):
    .venv/bin/python -m scripts.perf.runtimes --data ../shared/data/lc25000-lung-224 --json runs/runtimes.json
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import openvino as ov

from imageclf.core.engine import FieldOutputs
from imageclf.model.keras_engine import with_features
from imageclf.model.predictor import Predictor
from scripts.perf import other_runtimes
from scripts.perf.runtime_cold import load
from training.data.samples import load_split, read_manifest
from training.export.precision_measure import agreement, cpu, served_decisions, speed
from training.export.runtime_export import calibration_tiles, quantize_int8, to_saved_model
from training.models.peers import peer_b

MODEL = Path("hub_model")
CANDIDATES = ("keras", "keras-traced", "keras-xla", "openvino-f32", "openvino-auto", "openvino-int8") + other_runtimes.CANDIDATES
INT8 = tuple(name for name in CANDIDATES if name.endswith("-int8"))   # calibrated on TRAIN tiles: need --data


def export_graphs(predictor: Predictor, out: Path, data: str | None) -> dict[str, str]:
    """Every candidate's file, from one SavedModel of the two-output model, into ``out``.

    OpenVINO as ``runtime_export`` makes it (``--precision float32`` / ``auto``, and ``int8``);
    int8 candidates only with ``data`` (300 TRAIN tiles, seed 0, the same for every int8).
    Returns the candidates that could not be made, with why.
    """
    out.mkdir(parents=True, exist_ok=True)
    saved = to_saved_model(with_features(predictor.model, predictor.feature_check.feature_layer), out / "saved_model")
    graph = ov.convert_model(str(saved))
    ov.save_model(graph, str(out / "openvino_f32.xml"), compress_to_fp16=False)
    tiles = calibration_tiles(predictor.folder, Path(data), count=300, seed=0) if data else None
    if tiles is not None:
        ov.save_model(quantize_int8(graph, tiles), str(out / "openvino_int8.xml"), compress_to_fp16=False)
    return other_runtimes.export_all(saved, out, tiles)


def cold(name: str, folder: Path, graphs: Path) -> dict:
    """In a fresh process: seconds from start to the first answer, and peak RSS."""
    out = subprocess.run([sys.executable, "-m", "scripts.perf.runtime_cold", name, "--model", str(folder),
                          "--graphs", str(graphs)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


class CallEngine:
    """A candidate's call (fields -> probabilities, features) as a field engine with the model's checks."""

    def __init__(self, call, predictor: Predictor) -> None:
        self.call, self.predictor = call, predictor

    def run(self, fields: np.ndarray) -> FieldOutputs:
        probabilities, features = self.call(fields)
        return FieldOutputs.from_pass(np.asarray(probabilities, np.float64), np.asarray(features, np.float32),
                                      self.predictor.feature_check, self.predictor.tissue_gate)


def agreements(calls: dict, labels: np.ndarray, tiles: np.ndarray, predictor: Predictor) -> dict:
    """Per candidate, against keras, decisions as served (``precision_measure``): same label, same
    refusal, both; |dp|; ECE; accuracy."""
    decided = {name: served_decisions(predictor, CallEngine(call, predictor), tiles) for name, call in calls.items()}
    return {name: agreement(d, decided["keras"], labels) for name, d in decided.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(MODEL))
    parser.add_argument("--data", help="dataset root of the TEST split (agreement); without it, speed only")
    parser.add_argument("--tiles", type=int, default=0, help="TEST tiles for agreement (0: all)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch1", type=int, default=10, help="batch-1 calls per candidate per round")
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--graphs", default="runs/runtimes", help="where the OpenVINO graphs go")
    args = parser.parse_args(argv)
    folder, graphs = Path(args.model), Path(args.graphs)
    predictor = Predictor(folder, runtime="keras")
    failed = export_graphs(predictor, graphs, args.data)
    names = [n for n in CANDIDATES if (args.data or n not in INT8) and n not in failed]
    calls, sizes = {}, {}
    for name in names:
        calls[name], sizes[name] = load(name, folder, graphs)
    peer = peer_b(len(predictor.class_ids))
    calls["peer-cnn-29.6M"] = lambda x: [peer.predict_on_batch(x), None]
    if args.data:
        test = [s for s in read_manifest(folder / "split_manifest.csv") if s.split == "test"]
        test = test[:args.tiles] if args.tiles else test
        tiles, labels = load_split(args.data, test, class_ids=predictor.class_ids, size=predictor.input_size)
    else:
        tiles, labels = np.random.default_rng(0).integers(0, 256, (64, 224, 224, 3), dtype=np.uint8), None
    report = {"cpu": cpu(), "tiles": int(len(tiles)), "speed": speed(calls, tiles, rounds=args.rounds, batch1=args.batch1),
              "cold": {name: cold(name, folder, graphs) for name in names}, "file_mb": sizes, "not_made": failed}
    if labels is not None:
        report["agreement"] = agreements({n: calls[n] for n in names}, labels, tiles, predictor)
    print(markdown(report))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


def markdown(report: dict) -> str:
    peer = report["speed"]["peer-cnn-29.6M"]["batch1_ms"]
    keras = report["speed"]["keras"]
    lines = [f"CPU: {report['cpu']}", f"peer CNN (29.6 M parameters) batch-1: {peer:.1f} ms", "",
             "| runtime | batch-1 ms | x peer CNN | batch-32 fields/s | x keras | cold s | peak RSS MB | file MB |"
             " decisions = keras | label | refusal | max / mean abs dp | ECE | accuracy |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in report["cold"]:
        s, c, a = report["speed"][name], report["cold"][name], report.get("agreement", {}).get(name)
        agree = ("| – | – | – | – | – | – |" if a is None else
                 f"| {100 * a['decision']:.2f}% | {100 * a['label']:.2f}% | {100 * a['refusal']:.2f}% | "
                 f"{a['max_dp']:.4f} / {a['mean_dp']:.5f} | {100 * a['ece']:.2f}% | {100 * a['accuracy']:.2f}% |")
        lines.append(f"| {name} | {s['batch1_ms']:.1f} | {s['batch1_ms'] / peer:.2f} | {s['batch32_fields_s']:.1f} | "
                     f"{s['batch32_fields_s'] / keras['batch32_fields_s']:.2f} | {c['cold_s']:.1f} | {c['rss_mb']:.0f} | "
                     f"{report['file_mb'][name]:.1f} " + agree)
    lines += [f"{name}: not measured, the export failed ({why})" for name, why in report.get("not_made", {}).items()]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
