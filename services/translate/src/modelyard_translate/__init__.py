"""modelyard translate stage."""
