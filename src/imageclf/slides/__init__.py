"""Whole-slide images: read a pyramid lazily, find its tissue, plan its fields at the model's physical
scale, run them through the one field loop every client uses (``imageclf.core.pipeline``), and write
the results.

Modules, in the order a slide goes through them:

- ``reader``: OpenSlide behind one small class (levels, metadata and its mpp, region reads, a bounded thumbnail).
- ``physical``: microns per pixel of the slide (stated, metadata or TIFF tags, or the nucleus-size
  estimate); the level to read.
- ``slide_model``: the model as scoring sees it, with its microns per pixel from config.json.
- ``tissue``: the tissue mask of the thumbnail (saturation/Otsu, pen marks out, morphology, min area).
- ``fields``: the field grid at the model's scale and the lazy field source the loop reads.
- ``scoring``: scale -> tissue -> grid -> stain estimate -> the loop -> one typed ``SlideResult`` (``results``).
- ``writers`` (with ``heatmap``): fields.csv, fields.geojson (QuPath), heatmap.png, tissue.png,
  summary.json, each written atomically.
- ``cohort``: jobs, one input scored into its folder (``process``), serial runs; ``dask_run``: the
  same per slide on a Dask cluster (one slide per task, model once per worker).

``docs/slides.md`` has the commands, the output formats and the cluster set-up.

Example:
    >>> model = SlideModel.from_folder("hub_model")                 # imageclf.slides.slide_model
    >>> result = score_slide("CMU-1-Small-Region.svs", model)       # imageclf.slides.scoring
    >>> result.scale.source, result.verdict.abstain_code
    ('metadata', 'fields_refused')
"""
