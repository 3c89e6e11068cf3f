"""ONNX Runtime and LiteRT candidates for the runtime benchmark: made from the same SavedModel, loaded alike.

Only ``scripts/perf/runtimes.py`` uses these; serving runs OpenVINO (the rule's choice,
docs/operations.md). Each graph has the served model's contract: raw RGB uint8 in (N x 224 x 224 x 3);
probabilities and the pooled features out, from one pass. The SavedModel comes from
``model.export(format="tf_saved_model")`` of the two-output model, as for OpenVINO.

- ONNX float32: ``python -m tf2onnx.convert --saved-model`` (opset 17; its documented CLI).
- ONNX int8: ONNX Runtime static quantisation (QDQ, per-channel weights, MinMax calibration on
  the TRAIN tiles the OpenVINO int8 uses); only ``Conv`` is quantised, so the head's MatMul and the
  pooling stay float, as in ``training/export/runtime_export.py`` (its weights span 0.3 to 12,000).
- LiteRT float32: ``tf.lite.TFLiteConverter.from_saved_model``.
- LiteRT int8: the same converter with ``Optimize.DEFAULT`` and the calibration tiles as the
  representative dataset (integer kernels where it has them, float elsewhere).
Interpreters and sessions get 2 threads (the machine's cores).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

ONNX_FILES = {"onnxruntime-f32": "model_f32.onnx", "onnxruntime-int8": "model_int8.onnx"}
LITERT_FILES = {"litert-f32": "model_f32.tflite", "litert-int8": "model_int8.tflite"}
CANDIDATES = tuple(ONNX_FILES) + tuple(LITERT_FILES)
THREADS = 2


def export_all(saved_model: Path, out: Path, calibration: np.ndarray | None) -> dict[str, str]:
    """Write every candidate's file into ``out``; int8 ones only with calibration tiles.

    Returns the candidates that could not be made, with the reason (their packages missing, say).
    """
    failed: dict[str, str] = {}
    steps = {"onnxruntime-f32": lambda: onnx_f32(saved_model, out / ONNX_FILES["onnxruntime-f32"]),
             "litert-f32": lambda: litert(saved_model, out / LITERT_FILES["litert-f32"], None)}
    if calibration is not None:
        steps["onnxruntime-int8"] = lambda: onnx_int8(out / ONNX_FILES["onnxruntime-f32"],
                                                      out / ONNX_FILES["onnxruntime-int8"], calibration)
        steps["litert-int8"] = lambda: litert(saved_model, out / LITERT_FILES["litert-int8"], calibration)
    for name, step in steps.items():
        try:
            step()
        except (ImportError, RuntimeError, ValueError) as err:
            failed[name] = f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}"
    return failed


def onnx_f32(saved_model: Path, path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(saved_model), "--tag", "serve",
                           "--signature_def", "serve", "--opset", "17", "--output", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"tf2onnx exited with {done.returncode}: {(done.stderr.strip().splitlines() or [''])[-1]}")


def onnx_int8(f32: Path, path: Path, tiles: np.ndarray) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static  # deferred: only int8 needs it
    from onnxruntime.quantization.shape_inference import quant_pre_process  # deferred: as above

    class Tiles(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([tiles[i:i + 32] for i in range(0, len(tiles), 32)])

        def get_next(self) -> dict | None:
            batch = next(self.batches, None)
            return None if batch is None else {"image": batch}

    prepared = path.with_name(path.stem + "_prepared.onnx")
    quant_pre_process(str(f32), str(prepared), skip_symbolic_shape=True)
    quantize_static(str(prepared), str(path), Tiles(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["Conv"])
    # (No CalibMaxIntermediateOutputs: the calibration graph keeps only each tensor's min and max per
    # batch, and in ONNX Runtime 1.32 that option drops the batches it flushes without using them.)
    prepared.unlink()


def litert(saved_model: Path, path: Path, tiles: np.ndarray | None) -> None:
    import tensorflow as tf  # deferred: the cold-start child of an ONNX candidate never loads it

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    if tiles is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([tile[None]] for tile in tiles)
    path.write_bytes(converter.convert())


def load(name: str, graphs: Path):
    """A callable fields -> (probabilities, features) for ``name``, and its file's MB."""
    if name in ONNX_FILES:
        import onnxruntime as ort  # deferred: the child times its own imports

        path = graphs / ONNX_FILES[name]
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = THREADS, 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        outputs = _ordered([(o.name, o.shape) for o in session.get_outputs()])
        return (lambda x: session.run(outputs, {"image": np.ascontiguousarray(x, np.uint8)})), path.stat().st_size / 1e6
    from ai_edge_litert.interpreter import Interpreter  # deferred: as above

    path = graphs / LITERT_FILES[name]
    interpreters: dict[int, tuple] = {}

    def call(x: np.ndarray):
        if len(x) not in interpreters:   # one interpreter per batch size: resizing reallocates every tensor
            interpreter = Interpreter(model_path=str(path), num_threads=THREADS)
            index = interpreter.get_input_details()[0]["index"]
            interpreter.resize_tensor_input(index, list(x.shape))
            interpreter.allocate_tensors()
            outs = _ordered([(o["index"], list(o["shape"])) for o in interpreter.get_output_details()])
            interpreters[len(x)] = (interpreter, index, outs)
        interpreter, index, outs = interpreters[len(x)]
        interpreter.set_tensor(index, np.ascontiguousarray(x, np.uint8))
        interpreter.invoke()
        return [interpreter.get_tensor(o).copy() for o in outs]

    return call, path.stat().st_size / 1e6


def _ordered(outputs: list[tuple]) -> list:
    """Output keys as (probabilities, features): the narrower output is the probabilities."""
    return [key for key, _ in sorted(outputs, key=lambda item: item[1][-1])]
