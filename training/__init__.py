"""Train, evaluate and export image classifiers for the Hub (lung histopathology first).

One sub-package per step; a module imports only from its own step or an earlier one:
``data`` -> ``models`` -> ``calibration`` -> ``evaluation`` -> ``transfer`` -> ``export``, with ``runtime``
(devices, tracking, code version) usable from any step, and ``train.py`` (the command) on top.
``tests/test_training_steps.py`` checks it.
"""
