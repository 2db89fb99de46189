"""``modelyard send``: submit documents to a pipeline over Kafka and print the results."""

from __future__ import annotations

import base64
import getpass
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NoOpTracerProvider, SpanKind, Status, StatusCode

from modelyard.auth import CallerKey, CallerKeys
from modelyard.errors import ConfigError, ModelyardError
from modelyard.gateway import BlockingGateway, Submission, request_carrier
from modelyard.telemetry import configure_tracing
from modelyard.tensors import as_tensor
from modelyard.topics import pipeline_ingress_topic
from modelyard.wire import Envelope

__all__ = ["describe_result", "result_json", "send_command"]

_MAX_SHOWN = 8  # elements of a numeric output printed before it is summarised
_MAX_TEXT = 200  # characters of a text output printed


@click.command("send")
@click.argument("pipeline")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--text", "texts", multiple=True,
              help="Render TEXT to a page image and send that (repeatable).")  # fmt: skip
@click.option("--input", "input_name",
              help="Request field to put documents in [the spec's first BYTES input].")  # fmt: skip
@click.option(
    "--pipelines", type=click.Path(file_okay=False, path_type=Path), default=Path("pipelines"),
    show_default=True, help="Where pipeline specs (<pipeline>.yaml) are, to find the input.",
)  # fmt: skip
@click.option("--caller", help="Principal named in the request [the key's, or your login name].")
@click.option(
    "--key-file", type=click.Path(dir_okay=False, path_type=Path),
    envvar="MODELYARD_KEY_FILE",
    help="Your caller key (`modelyard callers add --key-out`): sign each request with it, "
    "as a router with auth on requires.",
)  # fmt: skip
@click.option("--bootstrap", envvar="MODELYARD_BOOTSTRAP", default="127.0.0.1:9092",
              show_default=True, help="Kafka bootstrap servers.")  # fmt: skip
@click.option("--topic-prefix", envvar="MODELYARD_TOPIC_PREFIX", default="yard",
              show_default=True, help="Prefix of modelyard topics.")  # fmt: skip
@click.option("--timeout", type=float, default=30.0, show_default=True,
              help="Seconds each request may take (its deadline).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="One JSON object per result (JSON Lines).")
def send_command(
    pipeline: str,
    files: Sequence[str],
    *,
    texts: Sequence[str],
    input_name: str | None,
    pipelines: Path,
    caller: str | None,
    key_file: Path | None,
    bootstrap: str,
    topic_prefix: str,
    timeout: float,
    as_json: bool,
) -> None:
    """Send each FILE (or --text) to PIPELINE and print its result.

    Each document is one request, sent to the pipeline's ingress topic (<prefix>.p.PIPELINE.in)
    as its first BYTES input: for the reference pipeline `docs`, `image`, one encoded PNG or
    JPEG. The docs pipeline reads images, so --text renders the text on a page first (with
    modelyard_ocr's sample renderer) and sends the picture. FILE "-" reads standard input.
    Prints, per document: outputs, the model versions that served it, any error, and the
    request and trace ids to pass to `modelyard trace`. Exits 1 if any request failed.
    With --key-file each request is signed (docs/wire-format.md, "Signing a request").
    Tracing follows the standard OTEL_* variables: each request's trace then starts with a
    `<pipeline> send` span here (docs/router.md, "Audit and tracing").
    """
    documents = [*_read_files(files), *_render_texts(texts)]
    if not documents:
        raise click.UsageError("nothing to send: give FILE arguments or --text")
    field = input_name or _first_bytes_input(pipelines, pipeline)
    key = _load_key(key_file)
    who = caller or (key.principal if key is not None else _login())
    if key is not None and who != key.principal and not key.may_act_for:
        raise click.UsageError(f"the key of {key.principal!r} cannot sign as --caller {who!r}")
    provider = configure_tracing("modelyard-send", set_global=False)
    try:
        spans = _SendSpans(provider, pipeline, topic_prefix, who, len(documents))
        carriers = [request_carrier(ctx) for ctx in spans.contexts()]
        requests = [
            Submission({field: [data]}, caller=who, carrier=carrier) for (_, data), (carrier, _)
            in zip(documents, carriers, strict=True)
        ]  # fmt: skip
        deadline_ms = int((time.time() + timeout) * 1000)
        try:
            connect = min(timeout, 10.0)
            with BlockingGateway(
                bootstrap, topic_prefix=topic_prefix, connect_timeout_s=connect, signing_key=key
            ) as gw:
                results = gw.submit_many(pipeline, requests, deadline_ms=deadline_ms)
        except ModelyardError as exc:
            spans.end([exc] * len(documents))
            raise click.ClickException(exc.message) from None
        spans.end(results)
    finally:
        if provider is not None:
            provider.shutdown()  # exports the spans before the process exits
    failed = False
    for (label, _), (_, trace_id), result in zip(documents, carriers, results, strict=True):
        failed |= not isinstance(result, Envelope) or result.error is not None
        if as_json:
            click.echo(json.dumps(result_json(label, result, trace_id)))
        else:
            click.echo("\n".join(describe_result(label, result, trace_id)))
    if failed:
        sys.exit(1)


class _SendSpans:
    """One PRODUCER span per document, the root of its request's trace, when the ``OTEL_*``
    variables configure tracing; without it, non-recording (the gateway starts a fresh trace)."""

    def __init__(
        self, provider: TracerProvider | None, pipeline: str, prefix: str, who: str, count: int
    ) -> None:
        tracer = trace.get_tracer("modelyard.cli", tracer_provider=provider or NoOpTracerProvider())
        attributes = {
            "modelyard.pipeline": pipeline,
            "modelyard.caller": who,
            "messaging.system": "kafka",
            "messaging.operation": "publish",
            "messaging.destination.name": pipeline_ingress_topic(prefix, pipeline),
        }
        self.spans = [
            tracer.start_span(f"{pipeline} send", kind=SpanKind.PRODUCER, attributes=attributes)
            for _ in range(count)
        ]

    def contexts(self) -> list[Context]:
        return [trace.set_span_in_context(span) for span in self.spans]

    def end(self, results: Sequence[Envelope | ModelyardError]) -> None:
        """Mark each span with its request's id and outcome, and end it."""
        for span, result in zip(self.spans, results, strict=True):
            error = result.error if isinstance(result, Envelope) else result
            if isinstance(result, Envelope):
                span.set_attribute("modelyard.request_id", result.request_id)
            outcome = "ok" if error is None else error.code
            span.set_attribute("modelyard.outcome", outcome)
            if error is not None:
                span.set_status(Status(StatusCode.ERROR, outcome))
            span.end()


def describe_result(label: str, result: Envelope | ModelyardError, trace_id: str) -> list[str]:
    """A result as readable lines: outcome, outputs, served_by, ids."""
    if isinstance(result, ModelyardError):
        return [f"{label}: failed ({result.code}): {result.message}", ""]
    error = result.error
    lines = [f"{label}: {'ok' if error is None else f'failed ({error.code})'}"]
    if error is not None:
        where = f" in stage {error.stage}" if error.stage else ""
        lines.append(f"  error{where}: {error.message}")
    lines.extend(f"  {name}: {_show(value)}" for name, value in result.fields.items())
    served = " ".join(f"{stage}={ref}" for stage, ref in (result.served_by or {}).items())
    lines.append(f"  served_by: {served or '-'}")
    lines.append(f"  request {result.request_id}  trace {trace_id}")
    lines.append(f"  details: modelyard trace {result.request_id}")
    return [*lines, ""]


def result_json(label: str, result: Envelope | ModelyardError, trace_id: str) -> dict[str, Any]:
    """A result as a JSON-ready dict (bytes as UTF-8 text, or base64 when not text)."""
    if isinstance(result, ModelyardError):
        return {"document": label, "error": {"code": result.code, "message": result.message}}
    error = result.error
    return {
        "document": label,
        "id": result.request_id,
        "trace_id": trace_id,
        "outputs": {name: _jsonable(value) for name, value in result.fields.items()},
        "served_by": dict(result.served_by or {}),
        "error": None if error is None else error.to_wire(),
    }


def _show(value: Any) -> str:
    if value is None:
        return "-"
    array = as_tensor(value)
    if array.dtype == object:
        items = [_text(v) for v in array.reshape(-1).tolist()]
        return json.dumps(items[0] if array.size == 1 else items, ensure_ascii=False)
    if array.size > _MAX_SHOWN:
        return f"{array.dtype}{list(array.shape)} (min {array.min():.4g}, max {array.max():.4g})"
    return json.dumps(np.round(array, 4).tolist() if array.dtype.kind == "f" else array.tolist())


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        try:
            value = value.decode()
        except UnicodeDecodeError:
            return f"<{len(value)} bytes>"
    text = str(value)
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "…"


def _jsonable(value: Any) -> Any:
    if value is None:
        return None
    array = as_tensor(value)
    if array.dtype == object:
        return _nested(array.tolist())
    return array.tolist()


def _nested(value: Any) -> Any:
    if isinstance(value, list):
        return [_nested(v) for v in value]
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(value).decode()}
    return value


def _read_files(files: Sequence[str]) -> list[tuple[str, bytes]]:
    out = []
    for name in files:
        try:
            data = sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
        except OSError as exc:
            raise click.ClickException(f"cannot read {name}: {exc.strerror}") from None
        out.append(("<stdin>" if name == "-" else name, data))
    return out


def _render_texts(texts: Sequence[str]) -> list[tuple[str, bytes]]:
    if not texts:
        return []
    try:
        from modelyard_ocr.samples import render  # noqa: PLC0415  # optional, heavy (Pillow)
    except ImportError:
        raise click.ClickException("--text needs the modelyard-ocr package installed") from None
    return [(_label(text), render(text)) for text in texts]


def _label(text: str) -> str:
    short = text if len(text) <= 30 else text[:29] + "…"
    return f"text {json.dumps(short, ensure_ascii=False)}"


def _first_bytes_input(pipelines: Path, pipeline: str) -> str:
    """The first BYTES input of the pipeline's spec, if the spec is at hand."""
    from modelyard.graph import load_spec  # noqa: PLC0415  # YAML and the spec schema: only here

    path = pipelines / f"{pipeline}.yaml"
    if not path.is_file():
        raise click.UsageError(f"no spec {path} to find the input in: pass --input NAME")
    try:
        spec = load_spec(path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    for name, tensor in spec.inputs.items():
        if tensor.datatype == "BYTES":
            return name
    raise click.UsageError(f"pipeline {pipeline!r} takes no BYTES input; pass --input NAME")


def _load_key(path: Path | None) -> CallerKey | None:
    if path is None:
        return None
    if not path.is_file():
        raise click.UsageError(f"no key file {path}")
    return CallerKeys.load(path).only(path)


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in a bare container
        return "cli"
