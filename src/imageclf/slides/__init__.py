"""Whole-slide images: read a pyramid lazily, find its tissue, score it field by field at the model's
physical scale through the same engine and refusal rule as every other client, and write the results.

Modules, in the order a slide goes through them:

- ``reader``: OpenSlide behind one small class (levels, metadata, region reads, a bounded thumbnail).
- ``physical``: microns per pixel of the slide (metadata, ``--mpp``, or the nucleus-size estimate) and
  of the model (``spec.scale.microns_per_pixel``, else ``model_scale.json``); the level to read.
- ``tissue``: the tissue mask of the thumbnail (saturation/Otsu, pen marks out, morphology, min area).
- ``fields``: the field grid at the model's scale, read lazily and scored in batches.
- ``scoring``: scale -> tissue -> fields -> engine -> refusal -> one typed ``SlideResult`` (``results``).
- ``writers`` (with ``heatmap``): fields.csv, fields.geojson (QuPath), heatmap.png, tissue.png,
  summary.json, each written atomically.
- ``cohort``: many slides, serially or on a Dask cluster (one slide per task, model once per worker).

``docs/slides.md`` has the commands, the output formats and the cluster set-up.

Example:
    >>> model = SlideModel.from_folder("hub_model")                 # imageclf.slides.results
    >>> result = score_slide("CMU-1-Small-Region.svs", model)       # imageclf.slides.scoring
    >>> result.scale.source, result.verdict.code
    ('metadata', 'fields_refused')
"""
