"""Measured on held-out data: metrics, intervals, the stress suite, the scale check, peer comparison."""
