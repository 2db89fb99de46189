"""Benchmarks comparing modelyard with the peers operators would otherwise run (`make bench`)."""
