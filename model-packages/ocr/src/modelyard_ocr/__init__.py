"""modelyard ocr stage."""
