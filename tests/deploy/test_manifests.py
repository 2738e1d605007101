"""The kustomize layouts render, validate offline against the schemas, and hang together."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

import kubernetes_validate
import pytest
from referencing import Registry

from flotilla.secrets import Keyring, new_key
from tests.deploy import checks
from tests.deploy.crd_schemas import SCHEMAS, custom_resource_errors
from tests.deploy.kustomize import Manifest

# Oldest and newest Kubernetes releases the manifests must validate against.
KUBERNETES_VERSIONS = ("1.29", kubernetes_validate.utils.latest_version())


def _builtin_errors(obj: Manifest, version: str) -> list[str]:
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.absolute_path)
        return [f"{path}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [exc.message]
    return []


def schema_errors(obj: Manifest, version: str, registry: Registry) -> list[str]:
    """Schema violations of one object: Kubernetes' own schema, or ours for custom kinds."""
    if (obj["apiVersion"], obj["kind"]) in SCHEMAS:
        return custom_resource_errors(obj, registry)
    return _builtin_errors(obj, version)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_validates(
    layout: tuple[str, list[Manifest]], version: str, k8s_registry: Registry
) -> None:
    name, objects = layout
    problems = {
        f"{o['kind']}/{o['metadata']['name']}": errors
        for o in objects
        if (errors := schema_errors(o, version, k8s_registry))
    }
    assert problems == {}, f"{name} against Kubernetes {version}"


def test_layout_has_every_part(layout: tuple[str, list[Manifest]]) -> None:
    _, objects = layout
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert kinds >= {
        ("Namespace", "flotilla"),
        ("Secret", "flotilla"),
        ("Secret", "flotilla-secrets-key"),
        ("ConfigMap", "flotilla-common"),
        ("Deployment", "flotilla-dispatcher"),
        ("Service", "flotilla-dispatcher"),
        ("HorizontalPodAutoscaler", "flotilla-dispatcher"),
        ("PodDisruptionBudget", "flotilla-dispatcher"),
        ("Deployment", "flotilla-worker"),
        ("PodDisruptionBudget", "flotilla-worker"),
        ("ScaledObject", "flotilla-worker"),
        ("TriggerAuthentication", "flotilla-rabbitmq"),
        ("RabbitmqCluster", "flotilla-rabbitmq"),
        ("Deployment", "flotilla-redis"),
        ("Service", "flotilla-redis"),
    }
    namespaced = [o for o in objects if o["kind"] != "Namespace"]
    assert {o["metadata"].get("namespace") for o in namespaced} == {"flotilla"}


@pytest.mark.parametrize("check", checks.ALL_CHECKS, ids=lambda c: c.__name__)
def test_cross_references(
    layout: tuple[str, list[Manifest]], check: Callable[[list[Manifest]], list[str]]
) -> None:
    _, objects = layout
    assert check(objects) == []


# --- every check fails on a broken copy --------------------------------------------------------


def _obj(objects: list[Manifest], kind: str, name: str) -> Manifest:
    return checks.find(objects, kind, name)[0]


def _container(objects: list[Manifest], deployment: str) -> Manifest:
    container: Manifest = checks.pod_spec(_obj(objects, "Deployment", deployment))["containers"][0]
    return container


def _worker(objects: list[Manifest]) -> Manifest:
    return _container(objects, "flotilla-worker")


def _dispatcher(objects: list[Manifest]) -> Manifest:
    return _container(objects, "flotilla-dispatcher")


def _cm(objects: list[Manifest], name: str) -> dict[str, Any]:
    data: dict[str, Any] = _obj(objects, "ConfigMap", name)["data"]
    return data


def _secret(objects: list[Manifest]) -> dict[str, Any]:
    """The stringData of the Secret `flotilla`."""
    data: dict[str, Any] = _obj(objects, "Secret", "flotilla")["stringData"]
    return data


def _so(objects: list[Manifest]) -> dict[str, Any]:
    spec: dict[str, Any] = _obj(objects, "ScaledObject", "flotilla-worker")["spec"]
    return spec


BREAKAGES: list[tuple[str, Callable[[list[Manifest]], Any], Callable[..., list[str]], str]] = [
    ("typo in a setting name",
     lambda o: _cm(o, "flotilla-worker").update(FLOTILLA_CONCURENCY="2"),
     checks.check_setting_names, "FLOTILLA_CONCURENCY is not a field of WorkerSettings"),
    ("dispatcher-only setting given to the worker",
     lambda o: _cm(o, "flotilla-worker").update(FLOTILLA_LISTEN="0.0.0.0:1"),
     checks.check_setting_names, "FLOTILLA_LISTEN is not a field of WorkerSettings"),
    ("typo in a key of an unused ConfigMap",
     lambda o: o.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"},
                         "data": {"FLOTILLA_LOGLEVEL": "INFO"}}),
     checks.check_setting_names, "ConfigMap x: FLOTILLA_LOGLEVEL is no setting"),
    ("unparsable setting value",
     lambda o: _cm(o, "flotilla-worker").update(FLOTILLA_DRAIN_TIMEOUT_S="30s"),
     checks.check_setting_names, "settings do not load"),
    ("envFrom a missing ConfigMap",
     lambda o: _worker(o)["envFrom"][0]["configMapRef"].update(name="nope"),
     checks.check_env_references, "'nope' does not exist"),
    ("credential in a ConfigMap",
     lambda o: _cm(o, "flotilla-common").update(FLOTILLA_ARTIFACT_KEY="k"),
     checks.check_secrets_placement, "holds credential FLOTILLA_ARTIFACT_KEY"),
    ("sealing key as a literal env value",
     lambda o: _dispatcher(o)["env"].__setitem__(0, {"name": "FLOTILLA_SECRETS_KEY",
                                                     "value": new_key()}),
     checks.check_secrets_placement, "FLOTILLA_SECRETS_KEY does not come from a Secret"),
    ("workers reading another sealing key than the dispatcher",
     lambda o: (_obj(o, "Secret", "flotilla")["stringData"].update(
         FLOTILLA_SECRETS_KEY=new_key()),
         _worker(o)["env"][0]["valueFrom"]["secretKeyRef"].update(name="flotilla")),
     checks.check_secrets_key, "different FLOTILLA_SECRETS_KEY"),
    ("malformed sealing key",
     lambda o: _obj(o, "Secret", "flotilla-secrets-key")["stringData"].update(
         FLOTILLA_SECRETS_KEY="k1:c2hvcnQ="),
     checks.check_secrets_key, "must be 32 bytes"),
    ("Service selector matching nothing",
     lambda o: _obj(o, "Service", "flotilla-dispatcher")["spec"]["selector"].update(
         {"app.kubernetes.io/name": "flotilla-dispatch"}),
     checks.check_services, "matches no Deployment"),
    ("Service targetPort that is no container port",
     lambda o: _obj(o, "Service", "flotilla-dispatcher")["spec"]["ports"][0].update(
         targetPort="web"),
     checks.check_services, "targetPort 'web'"),
    ("readiness on the liveness path",
     lambda o: _worker(o)["readinessProbe"]["httpGet"].update(path="/healthz"),
     checks.check_probes, "readinessProbe must GET /readyz"),
    ("worker metrics port moved but probes not",
     lambda o: _cm(o, "flotilla-worker").update(FLOTILLA_METRICS_PORT="9200"),
     checks.check_probes, "serves on 9200"),
    ("probe on a numeric port the process does not serve",
     lambda o: _dispatcher(o)["livenessProbe"]["httpGet"].update(port=9090),
     checks.check_probes, "livenessProbe port 9090"),
    ("dispatcher on its loopback default",
     lambda o: _cm(o, "flotilla-dispatcher").pop("FLOTILLA_LISTEN"),
     checks.check_dispatcher_listens_everywhere, "unreachable"),
    ("drain deadline longer than the grace period",
     lambda o: _cm(o, "flotilla-worker").update(FLOTILLA_DRAIN_TIMEOUT_S="120"),
     checks.check_drain_fits_grace_period, "is not longer than FLOTILLA_DRAIN_TIMEOUT_S 120"),
    ("cache dir not on a volume",
     lambda o: _cm(o, "flotilla-common").update(FLOTILLA_CACHE_DIR="/home/flotilla/.cache"),
     checks.check_writable_paths, "/home/flotilla/.cache is not a mounted volume"),
    ("writable root filesystem",
     lambda o: _worker(o)["securityContext"].update(readOnlyRootFilesystem=False),
     checks.check_security_contexts, "root filesystem is writable"),
    ("capabilities kept",
     lambda o: _dispatcher(o)["securityContext"].pop("capabilities"),
     checks.check_security_contexts, "capabilities are not dropped"),
    ("no memory limit",
     lambda o: _worker(o)["resources"]["limits"].pop("memory"),
     checks.check_resources, "no memory limit"),
    ("worker processes left to the node's core count",
     lambda o: (_cm(o, "flotilla-worker").update(FLOTILLA_WORKER_PROCESSES="0"),
                _worker(o)["resources"]["limits"].pop("cpu")),
     checks.check_worker_processes, "FLOTILLA_WORKER_PROCESSES is 0 without a CPU limit"),
    ("worker processes above the CPU limit",
     lambda o: _cm(o, "flotilla-worker").update(FLOTILLA_WORKER_PROCESSES="8"),
     checks.check_worker_processes, "FLOTILLA_WORKER_PROCESSES 8 exceeds the CPU limit"),
    ("worker prefetch below its concurrency",
     lambda o: _cm(o, "flotilla-worker").update(FLOTILLA_PREFETCH="1"),
     checks.check_worker_processes, "FLOTILLA_PREFETCH below the concurrency"),
    ("PDB selecting nothing",
     lambda o: _obj(o, "PodDisruptionBudget", "flotilla-worker")["spec"]["selector"].update(
         matchLabels={"app": "worker"}),
     checks.check_disruption_budgets, "selects 0 Deployments"),
    ("PDB that blocks every eviction",
     lambda o: _obj(o, "PodDisruptionBudget", "flotilla-worker")["spec"].update(
         minAvailable=checks.min_replicas(o, "flotilla-worker")),
     checks.check_disruption_budgets, "blocks every eviction"),
    ("HPA on the wrong Deployment",
     lambda o: _obj(o, "HorizontalPodAutoscaler", "flotilla-dispatcher")["spec"][
         "scaleTargetRef"].update(name="flotilla-worker"),
     checks.check_dispatcher_autoscaler, "no single HorizontalPodAutoscaler"),
    ("ScaledObject on the wrong Deployment",
     lambda o: _so(o)["scaleTargetRef"].update(name="worker"),
     checks.check_worker_autoscaler, "no single ScaledObject"),
    ("trigger on another queue",
     lambda o: _so(o)["triggers"][0]["metadata"].update(queueName="flotilla.invocations"),
     checks.check_worker_autoscaler, "queueName 'flotilla.invocations'"),
    ("queue prefix changed but trigger not",
     lambda o: _cm(o, "flotilla-common").update(FLOTILLA_QUEUE_PREFIX="prod"),
     checks.check_worker_autoscaler, "is not '^prod\\\\.(sync|jobs\\\\..+)$'"),
    ("trigger on the sync lane alone",
     lambda o: _so(o)["triggers"][0]["metadata"].pop("useRegex"),
     checks.check_worker_autoscaler, "useRegex is not true"),
    ("lanes' depths not summed",
     lambda o: _so(o)["triggers"][0]["metadata"].update(operation="max"),
     checks.check_worker_autoscaler, "operation 'max', not sum"),
    ("regex over AMQP",
     lambda o: _so(o)["triggers"][0]["metadata"].update(protocol="amqp"),
     checks.check_worker_autoscaler, "needs protocol http"),
    ("trigger authentication reading a missing key",
     lambda o: _obj(o, "TriggerAuthentication", "flotilla-rabbitmq")["spec"][
         "secretTargetRef"][0].update(key="AMQP_URL"),
     checks.check_worker_autoscaler, "flotilla-keda/AMQP_URL does not exist"),
    ("KEDA on the broker as another user",
     lambda o: _obj(o, "Secret", "flotilla-keda")["stringData"].update(
         host="amqp://other:pass@flotilla-rabbitmq:5672/"),
     checks.check_worker_autoscaler, "KEDA watches a different broker"),
    ("broker list missing a node",
     lambda o: _obj(o, "Secret", "flotilla")["stringData"].update(
         FLOTILLA_AMQP_URL=_secret(o)["FLOTILLA_AMQP_URL"].rsplit(",", 1)[0]),
     checks.check_broker_cluster, "lists 2 of the 3 nodes of flotilla-rabbitmq"),
    ("broker list naming a node twice",
     lambda o: _obj(o, "Secret", "flotilla")["stringData"].update(
         FLOTILLA_AMQP_URL=_secret(o)["FLOTILLA_AMQP_URL"] + ","
         + _secret(o)["FLOTILLA_AMQP_URL"].split(",")[0].replace("5672/", "5672/%2F")),
     checks.check_broker_cluster, "names a host twice"),
    ("quorum queues with more replicas than nodes",
     lambda o: _cm(o, "flotilla-common").update(FLOTILLA_QUORUM_SIZE="5"),
     checks.check_broker_cluster, "quorum size 5 is more than the 3 nodes"),
    ("quorum queues that cannot lose a node",
     lambda o: _cm(o, "flotilla-common").update(FLOTILLA_QUORUM_SIZE="2"),
     checks.check_broker_cluster, "quorum size 2 cannot survive losing a node"),
    ("broker URL naming a pod that does not exist",
     lambda o: _obj(o, "Secret", "flotilla")["stringData"].update(
         FLOTILLA_AMQP_URL=_secret(o)["FLOTILLA_AMQP_URL"].replace("server-2", "server-3")),
     checks.check_service_urls, "FLOTILLA_AMQP_URL points at flotilla-rabbitmq-server-3"),
    ("trigger on another vhost",
     lambda o: _so(o)["triggers"][0]["metadata"].update(vhostName="flotilla"),
     checks.check_worker_autoscaler, "vhostName 'flotilla'"),
    ("scale-down without a stabilization window",
     lambda o: _so(o)["advanced"]["horizontalPodAutoscalerConfig"]["behavior"][
         "scaleDown"].update(stabilizationWindowSeconds=0),
     checks.check_worker_autoscaler, "stabilization window"),
    ("Redis URL naming no Service",
     lambda o: _obj(o, "Secret", "flotilla")["stringData"].update(
         FLOTILLA_REDIS_URL="redis://redis:6379/0"),
     checks.check_service_urls, "FLOTILLA_REDIS_URL points at redis:6379"),
    ("AWS endpoint naming no Service",
     lambda o: _cm(o, "flotilla-common").update(FLOTILLA_AWS_ENDPOINT_URL="http://minio:9000"),
     checks.check_service_urls, "FLOTILLA_AWS_ENDPOINT_URL points at minio:9000"),
]


@pytest.mark.parametrize(
    "breakage,check,expected",
    [(b[1], b[2], b[3]) for b in BREAKAGES],
    ids=[b[0] for b in BREAKAGES],
)
def test_check_catches(
    base: list[Manifest],
    breakage: Callable[[list[Manifest]], Any],
    check: Callable[[list[Manifest]], list[str]],
    expected: str,
) -> None:
    # Given a correct layout, when one thing is broken, then its check names the problem.
    objects = copy.deepcopy(base)
    breakage(objects)
    problems = check(objects)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    "kind,name,change,expected",
    [
        ("ScaledObject", "flotilla-worker",
         lambda s: s["triggers"][0]["metadata"].update(mode="queueLength"), "mode"),
        ("ScaledObject", "flotilla-worker",
         lambda s: s["triggers"][0]["metadata"].update(value=8), "value"),
        ("ScaledObject", "flotilla-worker", lambda s: s.update(minReplicas=1), "minReplicas"),
        ("ScaledObject", "flotilla-worker",
         lambda s: s["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"][
             "policies"][0].update(periodSecond=60), "periodSecond"),
        ("TriggerAuthentication", "flotilla-rabbitmq",
         lambda s: s["secretTargetRef"][0].pop("key"), "key"),
        ("RabbitmqCluster", "flotilla-rabbitmq", lambda s: s.update(replica=3), "replica"),
        ("RabbitmqCluster", "flotilla-rabbitmq",
         lambda s: s["resources"].update(limit={"cpu": "1"}), "limit"),
    ],
)
def test_custom_resource_schema_catches(
    base: list[Manifest], k8s_registry: Registry, kind: str, name: str,
    change: Callable[[dict[str, Any]], Any], expected: str,
) -> None:
    obj = copy.deepcopy(_obj(base, kind, name))
    change(obj["spec"])
    errors = custom_resource_errors(obj, k8s_registry)
    assert any(expected in e for e in errors), errors


def test_builtin_schema_catches_a_misspelt_field(base: list[Manifest]) -> None:
    obj = copy.deepcopy(_obj(base, "Deployment", "flotilla-worker"))
    checks.pod_spec(obj)["terminationGracePeriod"] = 45
    assert "terminationGracePeriod" in " ".join(_builtin_errors(obj, KUBERNETES_VERSIONS[0]))


# --- layout-specific facts ---------------------------------------------------------------------


def test_base_runs_three_rabbitmq_nodes(base: list[Manifest]) -> None:
    assert _obj(base, "RabbitmqCluster", "flotilla-rabbitmq")["spec"]["replicas"] == 3
    assert checks.min_replicas(base, "flotilla-worker") >= 2
    assert checks.min_replicas(base, "flotilla-dispatcher") >= 2


def test_dev_scales_down(dev: list[Manifest]) -> None:
    assert _obj(dev, "RabbitmqCluster", "flotilla-rabbitmq")["spec"]["replicas"] == 1
    assert checks.min_replicas(dev, "flotilla-worker") == 1
    assert checks.min_replicas(dev, "flotilla-dispatcher") == 1
    assert _worker(dev)["image"] == "flotilla-worker:dev"
    endpoint = checks.container_env(dev, _worker(dev))["FLOTILLA_AWS_ENDPOINT_URL"]
    assert endpoint == "http://flotilla-aws:5000"


def test_dev_broker_credentials_match_the_cluster(dev: list[Manifest]) -> None:
    config = _obj(dev, "RabbitmqCluster", "flotilla-rabbitmq")["spec"]["rabbitmq"][
        "additionalConfig"]
    settings = dict(re.findall(r"^(default_user|default_pass) = (\S+)$", config, re.MULTILINE))
    url = _obj(dev, "Secret", "flotilla")["stringData"]["FLOTILLA_AMQP_URL"]
    assert url.startswith(f"amqp://{settings['default_user']}:{settings['default_pass']}@")


def test_base_lists_every_broker_node_and_replicates_queues_on_three(
    base: list[Manifest],
) -> None:
    env = checks.container_env(base, _worker(base))
    assert checks.broker_urls(env) == [
        f"amqp://CHANGE-ME:CHANGE-ME@flotilla-rabbitmq-server-{i}.flotilla-rabbitmq-nodes:5672/"
        for i in range(3)
    ]
    assert env["FLOTILLA_QUORUM_SIZE"] == "3"
    dispatcher = checks.pod_spec(_obj(base, "Deployment", "flotilla-dispatcher"))["containers"][0]
    dispatcher_env = checks.container_env(base, dispatcher)
    assert checks.broker_urls(dispatcher_env) == checks.broker_urls(env)
    assert dispatcher_env["FLOTILLA_QUORUM_SIZE"] == "3"  # a queue argument: both agree
    # KEDA reads one URL: the cluster's Service, same user.
    host = _obj(base, "Secret", "flotilla-keda")["stringData"]["host"]
    assert host == "http://CHANGE-ME:CHANGE-ME@flotilla-rabbitmq:15672/"  # management API


def test_base_secret_holds_only_placeholders(base: list[Manifest]) -> None:
    # Nothing real is committed: every credential must be replaced before deploying.
    data = _obj(base, "Secret", "flotilla")["stringData"]
    for key in ("FLOTILLA_AMQP_URL", "FLOTILLA_ARTIFACT_KEY", "AWS_SECRET_ACCESS_KEY"):
        assert "CHANGE-ME" in data[key]
    assert _obj(base, "Secret", "flotilla-secrets-key")["stringData"][
        "FLOTILLA_SECRETS_KEY"] == "CHANGE-ME"


def test_dev_seals_secrets_with_one_key_for_both_processes(dev: list[Manifest]) -> None:
    keys = {checks.container_env(dev, c)["FLOTILLA_SECRETS_KEY"]
            for c in (_worker(dev), _dispatcher(dev))}
    assert len(keys) == 1
    assert Keyring.parse(keys.pop()).current == "dev"


def test_rabbitmq_config_lines_are_key_value(layout: tuple[str, list[Manifest]]) -> None:
    _, objects = layout
    config = _obj(objects, "RabbitmqCluster", "flotilla-rabbitmq")["spec"]["rabbitmq"][
        "additionalConfig"]
    lines = [ln for ln in config.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert lines
    bad = [ln for ln in lines if not re.fullmatch(r"[a-z0-9_.]+ = \S.*", ln)]
    assert bad == []
    # Deliveries must outlive the longest function timeout (900 s) plus the worker's drain.
    timeout_ms = int(re.search(r"^consumer_timeout = (\d+)$", config, re.MULTILINE).group(1))  # type: ignore[union-attr]
    assert timeout_ms >= (900 + 60) * 1000
