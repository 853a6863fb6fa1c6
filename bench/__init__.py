"""Benchmarks; their figures are written to docs/."""
