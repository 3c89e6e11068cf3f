"""One runtime candidate's cold start, in a fresh process: start to first answer; peak RSS.

Run by ``scripts/perf/runtimes.py`` once per candidate. Nothing heavy is imported at the top, so
an OpenVINO candidate's process never loads TensorFlow and its RSS is its own.

    .venv/bin/python -m scripts.perf.runtime_cold openvino-int8 --model hub_model --graphs runs/runtimes
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import psutil

from scripts.perf import other_runtimes   # numpy only at import: candidates' imports stay deferred
from scripts.perf.local_space import peak_rss_bytes   # stdlib and psutil only


def load(name: str, folder: Path, graphs: Path):
    """A callable fields -> (probabilities, features) for candidate ``name``, and its files' MB."""
    if name in other_runtimes.CANDIDATES:
        return other_runtimes.load(name, graphs)
    if name.startswith("openvino"):
        from imageclf.model.openvino_engine import OpenVinoEngine  # deferred: the child times its imports
        xml = graphs / ("openvino_int8.xml" if name == "openvino-int8" else "openvino_f32.xml")
        engine = OpenVinoEngine(xml, None, precision={"openvino-f32": "float32", "openvino-auto": "auto"}.get(name, "int8"))
        return engine.forward, (xml.stat().st_size + xml.with_suffix(".bin").stat().st_size) / 1e6
    import keras  # deferred: as above

    from imageclf.model.config import read_config  # deferred: as above
    from imageclf.model.keras_engine import with_features  # deferred: as above
    model = keras.saving.load_model(folder / "model.keras", compile=False, safe_mode=True)
    both = with_features(model, read_config(folder).feature_ood.feature_layer)
    size = (folder / "model.keras").stat().st_size / 1e6
    if name == "keras":
        return (lambda x: both.predict_on_batch(x)), size
    import tensorflow as tf  # deferred: as above
    # "keras-traced": one traced serving function (a graph, no per-op Python); "keras-xla": also XLA-compiled.
    fn = tf.function(lambda x: both(x, training=False), jit_compile=name == "keras-xla", reduce_retracing=True)
    return (lambda x: [t.numpy() for t in fn(tf.constant(x))]), size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("candidate")
    parser.add_argument("--model", default="hub_model")
    parser.add_argument("--graphs", default="runs/runtimes", help="the folder scripts/perf/runtimes.py wrote")
    args = parser.parse_args(argv)
    call, _ = load(args.candidate, Path(args.model), Path(args.graphs))
    call(np.zeros((1, 224, 224, 3), np.uint8))
    # From the process's start (imports included) to the first answer; this process's own peak RSS.
    print(json.dumps({"cold_s": time.time() - psutil.Process().create_time(), "rss_mb": peak_rss_bytes() / 2**20}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
