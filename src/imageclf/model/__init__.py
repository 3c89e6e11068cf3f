"""A model folder: its typed config, safe loading, the Keras field engine and Grad-CAM."""
