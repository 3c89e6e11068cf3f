"""The model's origin: where it comes from (``source``: a Hub repo pinned to a commit, or a local
folder), getting a Hub revision's files (``download``), and checking each cached file (``cache``)."""
