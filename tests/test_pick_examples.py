"""Example images for the Space come from the model's test split only."""
from __future__ import annotations

import pytest

from scripts.release.pick_examples import ExamplesError, main, pick_examples
from training.data.samples import grouped_split, index_dataset, write_manifest


def test_examples_are_test_split_images_per_class(tmp_path, tiny_dataset):
    samples = grouped_split(index_dataset(tiny_dataset), seed=0)
    model = tmp_path / "model"
    write_manifest(samples, model / "split_manifest.csv")
    copies = pick_examples(model, data=tiny_dataset, out=tmp_path / "examples", per_class=2)
    assert sorted(p.name for p in copies) == [f"{c}_{n}.png" for c in ("alpha", "beta", "gamma") for n in (1, 2)]
    test_bytes = {(tiny_dataset / s.path).read_bytes() for s in samples if s.split == "test"}
    assert all(p.read_bytes() in test_bytes for p in copies)  # never a training or validation image


def test_missing_manifest_or_data_is_a_clear_error(tmp_path, tiny_dataset, capsys):
    with pytest.raises(ExamplesError, match="split_manifest.csv not found"):
        pick_examples(tmp_path, data=tiny_dataset, out=tmp_path / "out")
    write_manifest(grouped_split(index_dataset(tiny_dataset), seed=0), tmp_path / "split_manifest.csv")
    assert main([str(tmp_path), "--data", str(tmp_path / "absent"), "--out", str(tmp_path / "out")]) == 1
    assert "is --data the dataset the model was trained on?" in capsys.readouterr().err
