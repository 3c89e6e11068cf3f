"""imageclf: the code shared by training, serving and scripts, imported under this one name everywhere.

It lives in ``src/``: training, scripts and tests get it from the project's editable install
(``make setup`` runs ``pip install -e .``); ``scripts/release/deploy_space.py`` copies it beside the
Space's ``app.py``, so the Space runs from its bundle alone. Sub-packages, one concern each:

- ``core``: the serving rule as stages that take one typed value and return one (request ->
  scale -> fields -> engine outputs -> refusals -> verdict), pure numpy and OpenCV;
- ``model``: a model folder (typed config, safe loading, the Keras field engine, Grad-CAM);
- ``hub``: the model from the Hugging Face Hub, pinned to a commit and checksum-verified;

plus ``errors`` (the ``ModelError`` base) and ``settings`` (every environment variable, read once).
"""
