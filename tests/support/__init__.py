"""Helpers shared by the test tiers and benchmarks (models, broker I/O, stage processes)."""
