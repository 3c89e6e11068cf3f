"""Measured on held-out data: metrics, intervals, the calibrated model on test (abstention included), the
stress suite, the scale check, peer comparison."""
