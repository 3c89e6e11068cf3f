"""Datasets: which images, in which split, and the shifts between labs used to augment and stress them."""
