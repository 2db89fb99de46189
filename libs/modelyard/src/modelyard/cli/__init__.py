"""The `modelyard` command-line interface."""
