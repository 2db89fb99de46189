"""A stage: one model version served over Kafka and gRPC through one shared batcher."""
