"""Datasets: which images, in which split, batches for training, the shifts between labs used to augment
and stress them, the stress suite's image sets, and generated non-tissue images."""
