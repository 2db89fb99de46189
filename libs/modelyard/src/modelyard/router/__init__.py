"""The router service: walks every request of a pipeline through its stages over Kafka
(:mod:`modelyard.router.service`), serves the pipeline gRPC API (:mod:`modelyard.router.app`),
and records every hop. The pipeline graph it walks is :mod:`modelyard.graph`."""
