"""modelyard sentiment stage."""
