"""Not a package: ``space/`` is the Space's folder (``app.py`` plus the ``imageclf`` package).

Importing ``space.imageclf.<module>`` would load every module a second time under another
name (two ``ModelError`` classes, two configs), so it is refused here; use ``imageclf.<module>``.
"""
raise ImportError("Import the shared code as 'imageclf' (installed by `make setup`), not via 'space'.")
