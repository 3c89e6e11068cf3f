"""Performance of a running Space and of whole slides: speed benchmark, load and soak tests, a local Space
process, the slide benchmark and the synthetic slides it (and the tests) build."""
