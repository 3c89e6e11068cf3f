"""Train, evaluate and export image classifiers for the Hub (lung histopathology first)."""
