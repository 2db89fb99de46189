"""Generated API code from protos/ (scripts/generate_protos.sh): OIP v2 and the pipeline service."""
