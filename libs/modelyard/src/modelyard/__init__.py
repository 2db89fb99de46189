"""modelyard: run graphs of ML models as streaming microservices."""

__version__ = "0.1.0"
