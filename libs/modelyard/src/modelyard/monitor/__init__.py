"""The monitor: windowed SLOs, drift and shadow agreement per model version (faust-streaming)."""
