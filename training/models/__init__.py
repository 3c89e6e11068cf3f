"""Model definitions, pretrained backbone weights, and loading a model from an earlier run."""
