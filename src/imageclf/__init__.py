"""imageclf: the code shared by training and serving, imported under this one name everywhere.

It ships inside ``space/`` so the Space deploys from that folder alone (``space/app.py`` finds it
beside itself); training, scripts and tests get it from the project's editable install
(``make setup`` runs ``pip install -e .``). Modules, one responsibility each:

- ``imaging`` (safe decoding, the model's input), ``model_config`` (config.json's typed schema),
  ``errors`` (the ``ModelError`` base)
- ``scale`` (nucleus-size magnification estimate), ``analysis`` (the one rule: scale, fields,
  verdict), ``tiling`` (fields of large images), ``ood`` + ``feature_ood`` (abstention checks)
- ``predictor`` (a loaded model folder), ``explain`` (Grad-CAM), ``model_safety`` (no custom code)
- ``model_source`` + ``hub_cache`` (pinned Hub download, sha256), ``examples``
- the Space's endpoints and texts: ``service``, ``panels``, ``batching``, ``uploads``
"""
