"""Issue 20: a tissue gate whose "not lung" means organ, not lab, measured leave-one-source-out.

Research code for one measurement, not part of serving. Four kinds of abstention rule ("arms") on the
bundled model's pooled ``features`` layer are compared through one stress table:

- (stain normalisation is the served code's, ``imageclf.core.stain``);
- ``arms``: the feature check refitted on lab-shifted features, a logistic tissue gate (lung vs
  same-lab colon, other organs, far-OOD), re-centring on an image's own fields, and their thresholds;
- ``features``: the fields of every set (the stress suite's own), cut, normalised and passed once
  through ``hub_model/model.keras``; probabilities, features and the colour check cached as npz;
- ``evaluate``: every arm on every set, leave-one-source-out where a source helped fit it,
  bootstrap by image, whole images through the served rule, the table (``python -m training.gate.evaluate``);
- ``table``: bootstrap intervals and the Markdown table.

The measured table and the decision are in ``docs/tissue-gate.md``.
"""
