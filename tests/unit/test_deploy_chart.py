"""deploy/helm/modelyard: its values agree with the code and the repository (pipeline specs,
initial versions, partitions bounding replicas), and, where `make deploy-check` has built helm,
the rendered chart holds every topic the code uses, scales each consumer group the code joins
and starts only commands the CLI accepts. (Schemas: `make deploy-check` runs kubernetes-validate
on the core kinds and the operators' schemas on KafkaTopic and ScaledObject.)"""

from __future__ import annotations

import os
import subprocess
from dataclasses import astuple
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from modelyard import topics
from modelyard.graph import load_spec
from modelyard.keys import ensure_local_keys
from modelyard.monitor.baselines import baseline_topic
from modelyard.monitor.labels import labels_topic
from modelyard.monitor.settings import monitor_group, monitor_topic

from tests.support.deploy import CHART, COMPOSE_DIR, ROOT, cli_problem

VALUES: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
PREFIX = VALUES["kafka"]["topicPrefix"]
HELM = ROOT / ".cache" / "bin" / "helm"
KUBE_VERSION = "1.33.0"
VARIANT = ROOT / "deploy" / "check" / "values-variant.yaml"  # GPU, PVC, TLS, SASL: every branch


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "modelyard"


@pytest.mark.parametrize("name", sorted(VALUES["pipelines"]))
def test_pipeline_spec_is_the_repository_file(name: str) -> None:
    spec = VALUES["pipelines"][name]["spec"]
    assert spec == (ROOT / "pipelines" / f"{name}.yaml").read_text()


def test_every_initial_version_has_a_worker_and_compose_agrees() -> None:
    deployed = {(s["model"], str(s["version"])) for s in VALUES["stages"]}
    compose = yaml.safe_load((COMPOSE_DIR / "docker-compose.yml").read_text())
    command = compose["services"]["init"]["command"]
    in_compose = dict(command[i + 1].split("=") for i, w in enumerate(command) if w == "--version")
    for name, pipe in VALUES["pipelines"].items():
        spec = load_spec(ROOT / "pipelines" / f"{name}.yaml")
        initial = {k: str(v) for k, v in pipe["initialVersions"].items()}
        assert set(initial) == set(spec.stages), name
        for stage, version in initial.items():
            assert (spec.stages[stage].model, version) in deployed, f"{stage}:{version}"
        assert initial == in_compose


def test_partitions_bound_every_scaled_workload() -> None:
    for s in VALUES["stages"]:
        assert 0 <= s["minReplicas"] <= s["maxReplicas"] <= s["partitions"], s
        assert s["lagThreshold"] > 0
    for name, pipe in VALUES["pipelines"].items():
        r = pipe["router"]
        assert 1 <= r["minReplicas"] <= r["maxReplicas"] <= pipe["partitions"], name


def test_no_strimzi_api_that_strimzi_1_no_longer_serves() -> None:
    assert not (ROOT / "deploy" / "k8s").exists()
    for path in (ROOT / "deploy").rglob("*.yaml"):
        assert "kafka.strimzi.io/v1beta" not in path.read_text(), path


# --- the rendered chart (helm from `make deploy-check`) ----------------------------------------


@cache
def rendered(values: Path | None = None) -> list[dict[str, Any]]:
    if not HELM.exists():
        reason = "helm is not built: `make deploy-check` builds it into .cache/bin"
        if os.environ.get("MODELYARD_DEPLOY_CHECK"):
            pytest.fail(reason)
        pytest.skip(reason)
    cmd = [str(HELM), "template", "modelyard", str(CHART), "--kube-version", KUBE_VERSION]
    if values is not None:
        cmd += ["-f", str(values)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _kind(kind: str, values: Path | None = None) -> list[dict[str, Any]]:
    return [d for d in rendered(values) if d["kind"] == kind]


def _pods(values: Path | None = None) -> list[dict[str, Any]]:
    return [
        d["spec"]["template"]["spec"]
        for d in rendered(values)
        if d["kind"] in ("Deployment", "Job")
    ]


def _containers(values: Path | None = None) -> list[dict[str, Any]]:
    return [c for pod in _pods(values) for c in pod["containers"]]


def test_rendered_topics_are_every_topic_the_code_uses() -> None:
    kafka_topics = {t["spec"]["topicName"]: t["spec"] for t in _kind("KafkaTopic")}
    wanted = {topics.audit_topic(PREFIX), topics.control_topic(PREFIX)}
    for name, pipe in VALUES["pipelines"].items():
        for topic in topics.pipeline_topics(PREFIX, name):
            wanted.add(topic)
            assert kafka_topics[topic]["partitions"] == pipe["partitions"], topic
    for s in VALUES["stages"]:
        model, version = s["model"], str(s["version"])
        wanted |= {topics.model_input_topic(PREFIX, model, version)}
        wanted |= {topics.model_dlq_topic(PREFIX, model, version)}
    assert wanted <= set(kafka_topics), wanted - set(kafka_topics)
    control = kafka_topics[topics.control_topic(PREFIX)]
    assert control["partitions"] == 1
    assert control["config"]["cleanup.policy"] == "compact"


def test_rendered_topics_hold_the_monitors_with_the_partitions_faust_needs() -> None:
    kafka_topics = {t["spec"]["topicName"]: t["spec"] for t in _kind("KafkaTopic")}
    audit = VALUES["kafka"]["auditPartitions"]
    # faust's app id is the group: <id>-<table>-changelog, <id>-__assignor-__leader
    group = monitor_group(PREFIX)
    wanted = {  # topic: (partitions, compacted)
        monitor_topic(PREFIX): (1, False),
        labels_topic(PREFIX): (audit, False),  # read beside the audit, partition by partition
        baseline_topic(PREFIX): (1, True),
        f"{group}-windows-changelog": (audit, True),  # co-partitioned with the audit topic
        f"{group}-partials-changelog": (1, True),
        f"{group}-__assignor-__leader": (1, False),
    }
    for name, (partitions, compacted) in wanted.items():
        spec = kafka_topics[name]
        assert spec["partitions"] == partitions, name
        assert (spec["config"].get("cleanup.policy") == "compact") is compacted, name
        assert spec["replicas"] == VALUES["kafka"]["replicas"], name


def test_rendered_scalers_watch_the_groups_the_code_joins() -> None:
    scalers = {so["spec"]["scaleTargetRef"]["name"]: so["spec"] for so in _kind("ScaledObject")}
    partitions = {t["spec"]["topicName"]: t["spec"]["partitions"] for t in _kind("KafkaTopic")}
    deployments = {d["metadata"]["name"] for d in _kind("Deployment")}
    expected = set()
    for s in VALUES["stages"]:
        model, version = s["model"], str(s["version"])
        # the stage's default group (stage/service.py): yard.g.<model>.<version>
        expected.add(
            (f"{PREFIX}.g.{model}.{version}", topics.model_input_topic(PREFIX, model, version))
        )
    for name in VALUES["pipelines"]:
        expected.add(
            (topics.router_group(PREFIX, name), topics.pipeline_ingress_topic(PREFIX, name))
        )
    seen = set()
    for target, spec in scalers.items():
        assert target in deployments
        (trigger,) = spec["triggers"]
        meta = trigger["metadata"]
        seen.add((meta["consumerGroup"], meta["topic"]))
        assert spec["maxReplicaCount"] <= partitions[meta["topic"]], target
    assert seen == expected


def test_rendered_pods_run_real_commands_as_non_root_with_probes() -> None:
    for values in (None, VARIANT):
        for c in _containers(values):
            assert cli_problem(c["args"]) is None, cli_problem(c["args"])
            env = {e["name"]: e.get("value") for e in c["env"]}
            assert env["MODELYARD_REPOSITORY"] == VALUES["models"]["mountPath"]
            assert env["MODELYARD_BOOTSTRAP"] == VALUES["kafka"]["bootstrap"]
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            mounts = {m["mountPath"] for m in c["volumeMounts"]}
            assert "/app/pipelines" in mounts
            if c["name"] != "init":
                assert {"readinessProbe", "livenessProbe"} <= set(c), c["name"]


def test_rendered_variant_mounts_models_tls_and_gpu() -> None:
    variant: dict[str, Any] = yaml.safe_load(VARIANT.read_text())
    containers = _containers(VARIANT)
    for c in containers:
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        assert VALUES["models"]["mountPath"] in mounts
        names = {e["name"] for e in c["env"]}
        assert "MODELYARD_KAFKA_SASL_PASSWORD" in names
    gpu = [c for c in containers if c["resources"].get("limits", {}).get("nvidia.com/gpu")]
    assert gpu
    assert all(c["image"].endswith(":" + VALUES["image"]["cudaTag"]) for c in gpu)
    assert len(gpu) == sum(1 for s in variant["stages"] if s.get("gpu"))
    assert all("MODELYARD_GRPC_TLS_CERT" in {e["name"] for e in c["env"]} for c in gpu)


def test_rendered_configmap_holds_the_pipeline_specs() -> None:
    (config_map,) = _kind("ConfigMap")
    for name in VALUES["pipelines"]:
        spec = config_map["data"][f"{name}.yaml"]
        assert yaml.safe_load(spec) == yaml.safe_load(
            (ROOT / "pipelines" / f"{name}.yaml").read_text()
        )


def test_more_routers_than_partitions_is_refused() -> None:
    rendered(None)  # skips without helm
    cmd = [str(HELM), "template", "x", str(CHART), "--kube-version", KUBE_VERSION,
           "--set", "pipelines.docs.router.maxReplicas=99"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode != 0
    assert "maxReplicas 99 > partitions" in done.stderr


def _helm_template(*args: str) -> subprocess.CompletedProcess[str]:
    rendered(None)  # skips without helm
    cmd = [str(HELM), "template", "x", str(CHART), "--kube-version", KUBE_VERSION, *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


@pytest.mark.parametrize("values", [None, VARIANT], ids=["default", "variant"])
def test_rendered_audit_sink_reads_its_store_from_a_secret(values: Path | None) -> None:
    overrides = yaml.safe_load(VARIANT.read_text()) if values else {}
    chosen = VALUES["auditSink"] | overrides.get("auditSink", {})  # replicas, store: whole
    (sink,) = [d for d in _kind("Deployment", values) if d["metadata"]["name"].endswith("-sink")]
    assert sink["spec"]["replicas"] == chosen["replicas"] <= VALUES["kafka"]["auditPartitions"]
    pod = sink["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["args"][0] == "audit-sink"
    env = {e["name"]: e for e in c["env"]}
    secret = env["MODELYARD_AUDIT_STORE"]["valueFrom"]["secretKeyRef"]
    assert secret == {"name": chosen["store"]["existingSecret"],
                      "key": chosen["store"]["existingSecretKey"]}  # fmt: skip
    assert "value" not in env["MODELYARD_AUDIT_STORE"]
    # control records are verified against the keyring of the keys Secret, mounted as routers do
    keyring = Path(env["MODELYARD_KEYRING"]["value"])
    (keys,) = [v for v in pod["volumes"] if v["name"] == "keys"]
    assert keys["secret"]["secretName"] == VALUES["keys"]["existingSecret"]
    assert {"name": "keys", "mountPath": str(keyring.parent), "readOnly": True} in c["volumeMounts"]
    # probes and the Service on the port it serves /metrics and /healthz on
    port = int(c["args"][c["args"].index("--metrics-port") + 1])
    assert c["ports"] == [{"name": "metrics", "containerPort": port}]
    assert c["readinessProbe"]["httpGet"] == {"path": "/healthz/ready", "port": "metrics"}
    (service,) = [s for s in _kind("Service", values) if s["metadata"]["name"].endswith("-sink")]
    assert service["spec"]["selector"] == sink["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"] == [{"name": "metrics", "port": port, "targetPort": "metrics"}]


def test_no_database_url_is_ever_rendered() -> None:
    for values in (None, VARIANT):
        text = yaml.safe_dump_all(rendered(values))
        assert "postgresql://" not in text
        assert "sqlite://" not in text


def test_the_audit_sink_can_be_left_out_and_is_bounded_by_the_audit_partitions() -> None:
    done = _helm_template("--set", "auditSink.enabled=false")
    assert done.returncode == 0, done.stderr
    assert "audit-sink" not in "".join(
        line for line in done.stdout.splitlines() if line.startswith("  name:")
    )
    done = _helm_template("--set", "auditSink.replicas=9")
    assert done.returncode != 0
    assert "auditSink.replicas 9 > kafka.auditPartitions 8" in done.stderr
    done = _helm_template("--set", "auditSink.store.existingSecret=")
    assert done.returncode != 0
    assert "auditSink.store.existingSecret" in done.stderr


# --- the monitor ---------------------------------------------------------------------------------


def _monitor(values: Path | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The monitor's Deployment and its Service."""
    (deployment,) = [
        d for d in _kind("Deployment", values) if d["metadata"]["name"].endswith("-monitor")
    ]
    (service,) = [s for s in _kind("Service", values) if s["metadata"]["name"].endswith("-monitor")]
    return deployment, service


def _flags(args: list[str], flag: str) -> list[str]:
    return [args[i + 1] for i, word in enumerate(args) if word == flag]


@pytest.mark.parametrize("values", [None, VARIANT], ids=["default", "variant"])
def test_rendered_monitor_runs_with_every_spec_its_window_and_metrics_port(
    values: Path | None,
) -> None:
    overrides = yaml.safe_load(VARIANT.read_text()) if values else {}
    chosen = VALUES["monitor"] | overrides.get("monitor", {})
    monitor, service = _monitor(values)
    assert monitor["spec"]["replicas"] == chosen["replicas"] <= VALUES["kafka"]["auditPartitions"]
    pod = monitor["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    args = c["args"]
    assert args[0] == "monitor"
    assert cli_problem(args) is None, cli_problem(args)
    assert float(_flags(args, "--window-s")[0]) == chosen["windowS"]
    mount = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}["pipelines"]
    specs = _flags(args, "--spec")
    assert specs == [f"{mount}/{name}.yaml" for name in sorted(VALUES["pipelines"])]
    (config_map,) = _kind("ConfigMap", values)
    assert {Path(s).name for s in specs} == set(config_map["data"])
    # bootstrap and prefix from the environment every service gets (click's envvars)
    env = {e["name"]: e for e in c["env"]}
    assert env["MODELYARD_BOOTSTRAP"]["value"] == VALUES["kafka"]["bootstrap"]
    assert env["MODELYARD_TOPIC_PREFIX"]["value"] == PREFIX
    # a restart when a spec (its drift thresholds) changes, as the routers
    router = next(d for d in _kind("Deployment", values) if "-router-" in d["metadata"]["name"])
    checksum = "checksum/pipelines"
    annotations = monitor["spec"]["template"]["metadata"]["annotations"]
    assert annotations[checksum] == router["spec"]["template"]["metadata"]["annotations"][checksum]
    # /metrics and /healthz on its port: probes, scrape annotations, the Service
    assert _flags(args, "--metrics-host") == ["0.0.0.0"]
    port = int(_flags(args, "--metrics-port")[0])
    assert c["ports"] == [{"name": "metrics", "containerPort": port}]
    assert c["readinessProbe"]["httpGet"] == {"path": "/healthz/ready", "port": "metrics"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz/live", "port": "metrics"}
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port)
    assert service["spec"]["selector"] == monitor["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"] == [{"name": "metrics", "port": port, "targetPort": "metrics"}]
    # faust's datadir under MODELYARD_STATE_DIR: a writable emptyDir under a read-only root
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert {"name": mounts[env["MODELYARD_STATE_DIR"]["value"]], "emptyDir": {}} in pod["volumes"]
    assert c["resources"]["requests"] == chosen["resources"]["requests"]


# the private keys each workload may read: the one it signs with, the admin key only at init
SIGNS_WITH = {"router": {"router.key"}, "shadow-audit": {"router.key"},
              "monitor": {"monitor.key"}, "stage": set(), "audit-sink": set(),
              "init": {"admin.key", "router.key", "monitor.key"}}  # fmt: skip


@pytest.mark.parametrize("values", [None, VARIANT], ids=["default", "variant"])
def test_each_workload_mounts_only_the_private_keys_it_signs_with(values: Path | None) -> None:
    seen = set()
    for pod in _pods(values):
        (container,) = pod["containers"]
        name = container["name"]
        seen.add(name)
        (keys,) = [v for v in pod["volumes"] if v["name"] == "keys"]
        private = {i["key"] for i in keys["secret"]["items"]} - {"keyring.yaml"}
        assert private == SIGNS_WITH[name], name
        env = {e["name"]: e.get("value") for e in container["env"]}
        writer = env.get("MODELYARD_WRITER_KEY")
        if name == "init":  # init reads its keys directory, not a writer key
            assert writer is None
        else:
            assert ({Path(writer).name} if writer else set()) == private, name
    assert seen == set(SIGNS_WITH)


@pytest.mark.parametrize("values", [None, VARIANT], ids=["default", "variant"])
def test_rendered_monitor_signs_with_its_own_key_from_the_keys_secret(values: Path | None) -> None:
    monitor, _ = _monitor(values)
    pod = monitor["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    env = {e["name"]: e for e in c["env"]}
    (keys,) = [v for v in pod["volumes"] if v["name"] == "keys"]
    assert keys["secret"]["secretName"] == VALUES["keys"]["existingSecret"]
    assert keys["secret"]["defaultMode"] == 0o400
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == "keys"]
    assert mount["readOnly"] is True
    projected = {i["path"]: i["key"] for i in keys["secret"]["items"]}

    def secret_key(variable: str) -> str:
        path = Path(env[variable]["value"])  # a path, never the key itself
        return str(projected[str(path.relative_to(mount["mountPath"]))])

    assert secret_key("MODELYARD_WRITER_KEY") == "monitor.key"  # the name its withdrawals carry
    assert secret_key("MODELYARD_KEYRING") == "keyring.yaml"
    # Kafka security as every service gets it: the SASL password from a Secret
    if values is not None:
        assert "MODELYARD_KAFKA_CONFIG" in env
        password = env["MODELYARD_KAFKA_SASL_PASSWORD"]
        assert set(password) == {"name", "valueFrom"}
        assert "secretKeyRef" in password["valueFrom"]


def test_init_finds_every_key_it_wants_in_the_read_only_keys_mount(tmp_path: Path) -> None:
    (job,) = _kind("Job")
    pod = job["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    keys_dir = c["args"][c["args"].index("--keys-dir") + 1]
    assert {"name": "keys", "mountPath": keys_dir, "readOnly": True} in c["volumeMounts"]
    (keys,) = [v for v in pod["volumes"] if v["name"] == "keys"]
    projected = {item["path"] for item in keys["secret"]["items"]}
    created = ensure_local_keys(tmp_path)  # what init reads in --keys-dir (and would create)
    wanted = {str(Path(p).relative_to(tmp_path)) for p in astuple(created)}
    assert wanted == projected


def test_no_key_material_is_ever_rendered() -> None:
    for values in (None, VARIANT):
        docs = rendered(values)
        text = yaml.safe_dump_all(docs)
        assert "PRIVATE KEY" not in text
        assert "-----BEGIN" not in text
        for doc in docs:  # the chart's only Secret is the SASL password's
            if doc["kind"] == "Secret":
                assert set(doc.get("stringData", {})) == {VALUES["kafka"]["existingSecretKey"]}
                assert "data" not in doc
        for pod in _pods(values):
            secrets = {v["name"] for v in pod["volumes"] if "secret" in v}
            for c in pod["containers"]:
                mounted = [m["mountPath"] + "/" for m in c["volumeMounts"] if m["name"] in secrets]
                for e in c["env"]:  # a key or password: a Secret's, or a file of a mounted one
                    if {"KEY", "PASSWORD"} & set(e["name"].split("_")):
                        assert "secretKeyRef" in e.get("valueFrom", {}) or e["value"].startswith(
                            tuple(mounted)
                        ), (c["name"], e["name"])


def test_rendered_network_policies_cover_the_monitors_metrics() -> None:
    for values in (None, VARIANT):
        monitor, _ = _monitor(values)
        labels = monitor["spec"]["template"]["metadata"]["labels"]
        policies = _kind("NetworkPolicy", values)
        assert any(_selects(p["spec"]["podSelector"], labels) for p in policies)


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    exact = all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())
    return exact and all(
        e["operator"] == "In" and labels.get(e["key"]) in e["values"]
        for e in selector.get("matchExpressions", [])
    )


def test_the_monitor_can_be_left_out_and_is_bounded_by_the_audit_partitions() -> None:
    done = _helm_template("--set", "monitor.enabled=false")
    assert done.returncode == 0, done.stderr
    docs = [d for d in yaml.safe_load_all(done.stdout) if d]
    names = {d["metadata"]["name"] for d in docs}
    assert not {n for n in names if n.endswith("-monitor")}
    topic_names = {d["spec"]["topicName"] for d in docs if d["kind"] == "KafkaTopic"}
    assert monitor_topic(PREFIX) not in topic_names
    assert not {t for t in topic_names if t.startswith(monitor_group(PREFIX))}
    partitions = VALUES["kafka"]["auditPartitions"]
    done = _helm_template("--set", f"monitor.replicas={partitions}")
    assert done.returncode == 0, done.stderr
    done = _helm_template("--set", f"monitor.replicas={partitions + 1}")
    assert done.returncode != 0
    assert f"monitor.replicas {partitions + 1} > kafka.auditPartitions {partitions}" in done.stderr
