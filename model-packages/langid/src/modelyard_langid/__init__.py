"""modelyard langid stage."""
