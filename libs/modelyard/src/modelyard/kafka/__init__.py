"""Kafka transport primitives: client config, message codec, offsets and commits, delivery
reports, fetch health and the poison-message ledger. Workers (a stage, the router) are built
on these in their own packages."""
