"""One-off studies whose results are in docs/; not installed with the package (experiments/README.md)."""
