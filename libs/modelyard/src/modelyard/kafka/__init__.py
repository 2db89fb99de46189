"""The Kafka adapter of a stage: consume, decode, hand to the core, reply, commit."""
