"""Performance of a running Space: speed benchmark, load and soak tests, and a local Space process."""
