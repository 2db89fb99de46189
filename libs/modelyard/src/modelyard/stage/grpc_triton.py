"""Triton's extensions of the OIP v2 gRPC service, as a stage answers them: its manifest as a
model configuration, its statistics, and the repository index of its one model.

Pure encoding, no I/O: ``modelyard.stage.grpc_adapter`` serves these messages. With them Triton's
perf_analyzer runs against a stage unchanged.

Batch axis: Triton's ``max_batch_size > 0`` means every request carries a leading batch axis
that ``dims`` leave out. A manifest whose every input and output has a variable first dimension
and at least one more has one (a stage's models take a request's rows as a batch), so its
configuration reports the manifest's ``batching.max_batch_size``, the remaining dimensions and
the batching wait; any other reports 0 and the whole shapes. A vector (``[-1]``) stays whole:
Triton's dims cannot be empty, and perf_analyzer fails on a batched input without any.
"""

from __future__ import annotations

from modelyard.api.oip.v2 import grpc_service_pb2 as pb
from modelyard.repository.manifest import Manifest
from modelyard.stage.statistics import Duration, StatisticsSnapshot
from modelyard.tensors import TensorSpec

__all__ = ["EXTENSIONS", "model_config", "model_statistics", "repository_entry"]

# what ServerMetadata lists; the repository extension's index only (load/unload: UNIMPLEMENTED)
EXTENSIONS = ("model_configuration", "statistics")


def model_config(manifest: Manifest) -> pb.ModelConfig:
    """The manifest as Triton's model configuration."""
    specs = (*manifest.inputs, *manifest.outputs)
    batched = all(len(spec.shape) > 1 and spec.shape[0] == -1 for spec in specs)
    cut = 1 if batched else 0
    config = pb.ModelConfig(
        name=manifest.name,
        platform=manifest.runtime,
        backend=manifest.runtime,
        max_batch_size=manifest.batching.max_batch_size if batched else 0,
        input=[
            pb.ModelInput(
                name=s.name, data_type=data_type(s), dims=s.shape[cut:], optional=s.optional
            )
            for s in manifest.inputs
        ],
        output=[
            pb.ModelOutput(name=s.name, data_type=data_type(s), dims=s.shape[cut:])
            for s in manifest.outputs
        ],
    )
    if batched and manifest.batching.max_batch_size > 1:
        delay_us = int(manifest.batching.max_wait_ms * 1000)
        config.dynamic_batching.max_queue_delay_microseconds = delay_us
    return config


def data_type(spec: TensorSpec) -> str:
    """An OIP datatype as the name of Triton's configuration enum (BYTES is TYPE_STRING)."""
    return "TYPE_STRING" if spec.datatype == "BYTES" else f"TYPE_{spec.datatype}"


def model_statistics(manifest: Manifest, stats: StatisticsSnapshot) -> pb.ModelStatistics:
    """The stage's statistics under its model name and version. Input preparation and output
    extraction are part of the model's time here (compute_input and compute_output count the
    requests with 0 ns)."""
    return pb.ModelStatistics(
        name=manifest.name,
        version=manifest.version,
        last_inference=stats.last_inference_ms,
        inference_count=stats.inference_count,
        execution_count=stats.execution_count,
        inference_stats=pb.InferStatistics(
            success=_duration(stats.success),
            fail=_duration(stats.fail),
            queue=_duration(stats.queue),
            compute_input=pb.StatisticDuration(count=stats.compute.count),
            compute_infer=_duration(stats.compute),
            compute_output=pb.StatisticDuration(count=stats.compute.count),
        ),
        batch_stats=[_batch(size, runs) for size, runs in sorted(stats.batches.items())],
    )


def repository_entry(manifest: Manifest, ready: bool) -> pb.RepositoryIndexResponse.ModelIndex:
    """The index entry of the stage's one model version."""
    return pb.RepositoryIndexResponse.ModelIndex(
        name=manifest.name,
        version=manifest.version,
        state="READY" if ready else "UNAVAILABLE",
        reason="" if ready else "the model is not ready",
    )


def _duration(duration: Duration) -> pb.StatisticDuration:
    return pb.StatisticDuration(count=duration.count, ns=duration.ns)


def _batch(size: int, runs: Duration) -> pb.InferBatchStatistics:
    return pb.InferBatchStatistics(
        batch_size=size,
        compute_input=pb.StatisticDuration(count=runs.count),
        compute_infer=_duration(runs),
        compute_output=pb.StatisticDuration(count=runs.count),
    )
