"""The model card (README.md of the Hub model repo), built from measured metrics only.

The Hub metadata and the card's body are here; the calibration and abstention wording is
``training.export.card_abstention``'s. ``python -m training.export.card FOLDER`` rewrites a folder's card.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from imageclf.model.config import read_config
from training.data.catalog import describe
from training.export.card_abstention import abstention_limits, abstention_text, calibration_text, percent
from training.export.licence import licence_metadata, licence_text


def _augmentations(settings: dict) -> str:
    words = {"flips": "flips", "rot90": "90-degree rotations", "free_rotation_degrees": "free rotations up to {}°",
             "scale_jitter": "scale jitter ±{}", "colour_jitter": "brightness/contrast/saturation jitter {}",
             "hed_jitter": "HED stain jitter {}"}
    used = [words[k].format(v) for k, v in settings.items() if v and k in words]
    return ", ".join(used) or "none"


def card_data(*, config: dict, metrics: dict, info=None) -> ModelCardData:
    """Hub metadata: library, task, and model-index results taken from metrics.json."""
    given = (config.get("data_layout") or {}).get("kind") == "given"
    common = dict(task_type="image-classification", dataset_type="imagefolder", dataset_name=config["dataset"],
                  dataset_split="test (as given)" if given else "test (grouped)")
    results = [
        EvalResult(metric_type="accuracy", metric_value=metrics["accuracy"], metric_name="Test accuracy", **common),
        EvalResult(metric_type="f1", metric_value=metrics["macro_f1"], metric_name="Macro F1", **common),
    ]
    if metrics.get("cancer_sensitivity") is not None:
        results.append(EvalResult(metric_type="recall", metric_value=metrics["cancer_sensitivity"],
                                  metric_name="Cancer sensitivity (any cancer class)", **common))
    return ModelCardData(
        library_name="keras",
        pipeline_tag="image-classification",
        **licence_metadata(config),
        tags=[*(info.tags if info else ("histopathology", "medical-imaging")), "keras", "image-classification"],
        model_name=config["model_name"],
        eval_results=results,
    )


def card_text(*, config: dict, labels: dict, metrics: dict, info) -> str:
    """The Markdown body of the card."""
    training = metrics.get("training", {})
    sizes = training.get("split_sizes", {})
    rows = "\n".join(
        f"| `{labels[i]['id']}` | {labels[i]['name']} | {m['precision']:.4f} | {m['recall']:.4f} | "
        f"{m['f1']:.4f} | {m['false_negative_rate']:.4f} | {m['support']} |"
        for i, m in ((i, metrics["per_class"][labels[i]["id"]]) for i in sorted(labels, key=int))
    )
    class_list = ", ".join(f"`{labels[i]['id']}` ({labels[i]['name']})" for i in sorted(labels, key=int))
    h, w = config["input_size"]
    return f"""
# {config['model_name']}

{_architecture(config)} that classifies {info.domain} into
{len(labels)} classes: {class_list}.

> **{config['disclaimer']}**

## Results on the held-out test split ({info.split_note})

| metric | value |
| --- | --- |
| accuracy | {percent(metrics['accuracy'])} |
| macro F1 | {percent(metrics['macro_f1'])} |
| cancer sensitivity (a cancer predicted as any cancer class) | {percent(metrics.get('cancer_sensitivity'))} |
| test images | {metrics['num_images']} |{_interval_row(metrics, info)}

| class | name | precision | recall | F1 | false-negative rate | support |
| --- | --- | --- | --- | --- | --- | --- |
{rows}

![Confusion matrix](confusion_matrix.png)
{_curves(config)}
These figures were measured once on the test split after choosing the weights on the validation
split. {info.results_note}

## How to use

```python
import json
import numpy as np
import keras
from huggingface_hub import hf_hub_download

repo_id, revision = "<user>/<this-repo>", "<commit sha>"  # pin a revision
model = keras.saving.load_model(hf_hub_download(repo_id, "model.keras", revision=revision),
                                compile=False, safe_mode=True)
labels = json.load(open(hf_hub_download(repo_id, "labels.json", revision=revision)))

{info.unit} = np.zeros(({h}, {w}, 3), np.uint8)     # an RGB uint8 {info.unit}, {h} x {w} px{"; stain-normalised first (below)" if config.get("stain") else "; no other preprocessing"}
probabilities = model.predict({info.unit}[None])[0]
print({{labels[str(i)]["id"]: float(p) for i, p in enumerate(probabilities)}})
```

The model takes raw RGB `uint8` pixels of {h} x {w}; resizing to its working resolution and scaling
are layers inside the model. {_larger_images(info, h)}{_stain_text(config)}

## Intended use

{info.intended_use}

## Out-of-scope use

Clinical diagnosis, screening or triage of any kind; images other than {info.domain}
{info.out_of_scope}.

## Calibration and abstention

{calibration_text(metrics)}

{abstention_text(config, metrics, info)}{_gate_text(config)}

## Training data

{info.title}. {_split_text(config)}: train {sizes.get('train', '?')},
validation {sizes.get('val', '?')}, test {sizes.get('test', '?')} images. The exact file list is
`split_manifest.csv` (sha256 `{config['training_manifest_sha256']}`).

{info.citation}

## Limitations

{info.caveats} {info.source_note}{abstention_limits(config, info)}

## Training procedure

{_procedure(config, training, h)}
Code version `{config['code_version']}`, Keras {config['keras_version']}.

## Licence

{licence_text(config)}
"""


def _architecture(config: dict) -> str:
    backbone = (config.get("training_run") or {}).get("backbone")
    if not backbone:
        return "A compact convolutional network, trained from scratch,"
    name = {"densenet121": "DenseNet121"}.get(str(backbone).split()[0], str(backbone).split()[0])
    return f"A {name} backbone pretrained on ImageNet (frozen), with a softmax head trained on the data below,"


def _curves(config: dict) -> str:
    run = config.get("training_run") or {}
    return "" if run.get("recipe") else "\n![Training curves](training_curves.png)\n"


def _procedure(config: dict, training: dict, h: int) -> str:
    run = config["training_run"]
    if run.get("recipe"):   # a transfer run (training/transfer/pipeline.py) describes itself
        return (f"{run['recipe']} Training time {training.get('train_seconds', '?')} s on a 2-core CPU for the "
                "head, ablation, feature check and export; extracting the cached features before it took about "
                "45 min (`make train` does both).")
    return (f"Input {h} px uint8 RGB, resized inside the model to {run.get('work_size') or h} px. "
            f"Augmentation (`training/data/augment.py`): {_augmentations(run.get('augmentation', {}))}. AdamW with "
            f"cosine decay, early stopping on validation loss; best validation epoch {training.get('best_epoch', '?')} "
            f"of {training.get('epochs_run', '?')}; training time {training.get('train_seconds', '?')} s on a "
            "2-core CPU.")


def _larger_images(info, h: int) -> str:
    if info.unit == "tile":
        return (f"Larger images, or images at another magnification, should first be brought to the training "
                f"scale and cut into {h} px fields: the Space does this (`src/imageclf/core/rule.py`, "
                "scale estimated from nucleus size, or stated in microns per pixel).")
    return f"Other sizes are resized to {h} px (as the training {info.unit}s were)."


def _gate_text(config: dict) -> str:
    """The tissue gate (config.json's ``tissue_gate`` block), when the model has one."""
    block = config.get("tissue_gate")
    if not block:
        return ""
    return ("\n\n**Tissue gate.** After the feature check, a logistic gate on the same pooled features refuses "
            "fields it judges not lung (code `organ`), above a probability of "
            f"{block['threshold']:g}. Fitted on {block.get('fitted_on') or 'lung against other tissue'}. It separates "
            "this lab's lung from this lab's colon; other organs from other labs are refused only in part "
            "(per organ: \"Where this model fails\").")


def _stain_text(config: dict) -> str:
    """How to feed a model trained on stain-normalised tiles (config.json's ``stain`` block)."""
    block = config.get("stain")
    if not block:
        return ""
    return (f"\n\n**Stain normalisation is part of this model's contract.** Its head and checks were trained on "
            f"{block['method'].capitalize()}-normalised tiles: map each image to the reference stains in "
            "`config.json`'s `stain` block first (`imageclf.core.stain`: `estimate_stains` once per image or slide, "
            "from its tissue, then `normalise` every field; the Space and the slide command do this). Where the "
            "stains cannot be estimated (too little tissue, one stain only) the fields keep their colours and "
            f"the answer says so (`on_failure: {block.get('on_failure', 'keep')}`). "
            f"Reference: {block.get('fitted_on') or 'the training tiles'}.")


def _split_text(config: dict) -> str:
    layout = config.get("data_layout") or {}
    if layout.get("kind") != "given":
        return "Split (seeded, stratified by class, by group)"
    carved = layout.get("carved") or []
    folders = ", ".join(f"`{folder}/`" for folder in layout["folders"].values())
    text = f"The dataset's own split folders ({folders})"
    if carved:
        share = config["training_run"].get("val_fraction", 0.15)
        names = {"val": "validation", "test": "test"}
        text += (f", with {' and '.join(names[c] for c in carved)} carved from `train/` ({share:.0%} of each class, seeded, "
                 "stratified; grouped when the dataset has a groups file)")
    class_map = config["training_run"].get("class_map") or {}
    if class_map:
        text += "; folders merged by the class map " + ", ".join(f"`{k}` -> `{v}`" for k, v in class_map.items())
    return text


# Optional report files in the model folder -> card section titles (in this order).
EXTRA_SECTIONS = {
    "stress.md": "Where this model fails: other stains, scales and organs",  # python -m training.evaluation.stress
    "scale.md": "Physical scale: the same answer at any magnification",  # python -m training.evaluation.scale_check
    "cross_validation.md": "Robustness: five grouped folds",  # python -m training.data.folds summary --markdown
    "ablation.md": "What each choice bought (validation)",
    "leaky_split.md": "For comparison with papers: a random (leaky) split",
    "comparison.md": "Compared with the compact CNN",  # the previous bundled model, same split
    "benchmark.md": "Compared with two small CNNs from earlier LC25000 projects",  # training/evaluation/compare_peers.py
}


# Reports appended to another's section: the tissue-gate arms (python -m training.gate.evaluate --report)
# are measured on the same stress sets, so they belong under "Where this model fails".
SECTION_PARTS = {"stress.md": ("tissue_gate.md",)}


def _interval_row(metrics: dict, info=None) -> str:
    ci = metrics.get("accuracy_ci95")
    if not ci:
        return ""
    # Groups are originals when a groups file joined copies; else each image is its own group.
    what = "originals" if ci["groups"] < metrics["num_images"] or info is None else f"{info.unit}s"
    return (f"\n| accuracy, 95% interval (bootstrap over the {ci['groups']} test {what}) | "
            f"{percent(ci['low'])} - {percent(ci['high'])} |")


def write_model_card(out: str | Path, *, config: dict, labels: dict, metrics: dict, info) -> ModelCard:
    """Write ``README.md`` (YAML metadata + body) into the model folder."""
    data = card_data(config=config, metrics=metrics, info=info)
    text = card_text(config=config, labels=labels, metrics=metrics, info=info)
    for name, title in EXTRA_SECTIONS.items():  # reports written by other scripts, when run
        parts = [Path(out) / part for part in (name, *SECTION_PARTS.get(name, ()))]
        if parts[0].is_file():
            body = "\n".join("#" + line if line.startswith("## ") else line  # nest under this section
                             for part in parts if part.is_file()
                             for line in part.read_text().splitlines() if not line.startswith("# "))
            text += f"\n## {title}\n" + body + "\n"
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n" + text)
    card.save(Path(out) / "README.md")
    return card


def main(argv: list[str] | None = None) -> None:
    """Rewrite a model folder's card from its files, e.g. after adding benchmark.md.

    Usage: python -m training.export.card hub_model
    """

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("folder", type=Path)
    folder = parser.parse_args(argv).folder
    config = read_config(folder).to_dict()   # validated by the one schema (src/imageclf/model/config.py)
    write_model_card(folder, config=config, labels=json.loads((folder / "labels.json").read_text()),
                     metrics=json.loads((folder / "metrics.json").read_text()),
                     info=describe(config["training_run"]["data"]))
    print(f"wrote {folder / 'README.md'}")


if __name__ == "__main__":
    main()
