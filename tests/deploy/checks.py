"""Cross-reference checks over rendered manifests: pure functions returning problems.

Each check takes the rendered objects (a list of dicts, as `kustomize.render` returns) and
returns a list of readable problems; an empty list means the layout is consistent. The
tests run every check on every layout and feed each check a broken copy to show it fails.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from flotilla.errors import SettingsError
from flotilla.secrets import Keyring
from flotilla.settings import (
    PER_PROCESS_CONCURRENCY,
    DispatcherSettings,
    WorkerSettings,
    env_name,
)
from flotilla.topology import Topology

Manifest = dict[str, Any]

# Which settings class each of our Deployments loads (its process), by Deployment name.
PROCESSES: dict[str, type[WorkerSettings | DispatcherSettings]] = {
    "flotilla-worker": WorkerSettings,
    "flotilla-dispatcher": DispatcherSettings,
}
# Environment variables read by libraries rather than by flotilla.settings.
LIBRARY_ENV = frozenset({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"})
# Settings that carry credentials: only ever in a Secret.
SECRET_SETTINGS = frozenset({"FLOTILLA_AMQP_URL", "FLOTILLA_REDIS_URL", "FLOTILLA_ARTIFACT_KEY",
                             "FLOTILLA_SECRETS_KEY"})
HEALTH_PATHS = {"livenessProbe": "/healthz", "readinessProbe": "/readyz"}
# Time the worker needs after the drain deadline: close channels and host clients, exit.
SHUTDOWN_MARGIN_S = 5


def setting_env_names(settings_class: type[Any]) -> frozenset[str]:
    """`FLOTILLA_<FIELD>` for every field of a settings dataclass."""
    return frozenset(env_name(name) for name in settings_class.model_fields)


def find(objects: list[Manifest], kind: str, name: str | None = None) -> list[Manifest]:
    """Objects of `kind` (and `name`, if given)."""
    return [
        o for o in objects
        if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]


def pod_spec(workload: Manifest) -> Manifest:
    """The pod template spec of a Deployment."""
    spec: Manifest = workload["spec"]["template"]["spec"]
    return spec


def pod_labels(workload: Manifest) -> Mapping[str, str]:
    """The labels of a Deployment's pod template."""
    labels: Mapping[str, str] = workload["spec"]["template"]["metadata"].get("labels", {})
    return labels


def container_env(objects: list[Manifest], container: Manifest) -> dict[str, str]:
    """The environment a container gets from envFrom and env (later sources win)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        for kind, ref in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            if ref in source:
                for obj in find(objects, kind, source[ref]["name"]):
                    env.update({k: str(v) for k, v in _data(obj).items()})
    for var in container.get("env", []):
        if "valueFrom" not in var:
            env[var["name"]] = str(var.get("value", ""))
            continue
        for kind, ref in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
            r = var["valueFrom"].get(ref)
            for obj in find(objects, kind, r["name"]) if r else []:
                if r["key"] in _data(obj):
                    env[var["name"]] = str(_data(obj)[r["key"]])
    return env


def _data(obj: Manifest) -> dict[str, Any]:
    return {**obj.get("data", {}), **obj.get("stringData", {})}


def _selected(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _flotilla_containers(objects: list[Manifest]) -> Iterator[tuple[str, Manifest]]:
    for name in PROCESSES:
        for deployment in find(objects, "Deployment", name):
            for container in pod_spec(deployment)["containers"]:
                yield name, container


def check_env_references(objects: list[Manifest]) -> list[str]:
    """envFrom and valueFrom name existing ConfigMaps, Secrets and keys."""
    problems = []
    for deployment in find(objects, "Deployment"):
        for c in pod_spec(deployment)["containers"]:
            for source in c.get("envFrom", []):
                for kind, ref in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                    if ref in source and not find(objects, kind, source[ref]["name"]):
                        problems.append(f"{c['name']}: envFrom {kind} "
                                        f"{source[ref]['name']!r} does not exist")
            for var in c.get("env", []):
                for kind, ref in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                    r = var.get("valueFrom", {}).get(ref)
                    if r and not any(r["key"] in _data(o) for o in find(objects, kind, r["name"])):
                        problems.append(f"{c['name']}: {var['name']} refers to missing "
                                        f"{kind} key {r['name']}/{r['key']}")
    return problems


def check_setting_names(objects: list[Manifest]) -> list[str]:
    """Every FLOTILLA_* variable a process gets is a field of its settings, and parses."""
    problems = []
    for name, container in _flotilla_containers(objects):
        settings_class = PROCESSES[name]
        known = setting_env_names(settings_class)
        env = container_env(objects, container)
        for var in sorted(env):
            if var.startswith("FLOTILLA_") and var not in known:
                problems.append(f"{name}: {var} is not a field of {settings_class.__name__}")
            elif not var.startswith("FLOTILLA_") and var not in LIBRARY_ENV:
                problems.append(f"{name}: {var} is read by nothing we know")
        try:
            settings_class.from_env({k: v for k, v in env.items() if k in known})
        except (SettingsError, ValueError) as exc:
            problems.append(f"{name}: settings do not load: {exc}")
    # Also keys no container reads (yet): a misspelt name must not hide in an unused map.
    every_setting = frozenset().union(*(setting_env_names(c) for c in PROCESSES.values()))
    for obj in find(objects, "ConfigMap") + find(objects, "Secret"):
        for key in sorted(_data(obj)):
            if key.startswith("FLOTILLA_") and key not in every_setting:
                problems.append(f"{obj['kind']} {obj['metadata']['name']}: {key} is no setting")
    return problems


def check_secrets_placement(objects: list[Manifest]) -> list[str]:
    """Credentials live in Secrets only, and every process gets each of them."""
    problems = []
    for cm in find(objects, "ConfigMap"):
        for key in sorted(set(cm.get("data", {})) & (SECRET_SETTINGS | LIBRARY_ENV)):
            problems.append(f"ConfigMap {cm['metadata']['name']} holds credential {key}")
    for name, container in _flotilla_containers(objects):
        secret_env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                for s in find(objects, "Secret", source["secretRef"]["name"]):
                    secret_env.update(_data(s))
        for var in container.get("env", []):
            ref = var.get("valueFrom", {}).get("secretKeyRef")
            if ref is not None:
                secret_env[var["name"]] = ref["key"]
            else:
                secret_env.pop(var["name"], None)  # a literal value overrides the Secret's
        for key in sorted(SECRET_SETTINGS - set(secret_env)):
            problems.append(f"{name}: {key} does not come from a Secret")
    return problems


def check_secrets_key(objects: list[Manifest]) -> list[str]:
    """Dispatcher and workers hold the same FLOTILLA_SECRETS_KEY: a placeholder or valid keys.

    Workers open what the dispatcher seals; different keys would make every secret
    `unavailable` to the guests.
    """
    keys = {name: container_env(objects, container).get("FLOTILLA_SECRETS_KEY", "")
            for name, container in _flotilla_containers(objects)}
    problems = []
    if len(set(keys.values())) > 1:
        problems.append("the dispatcher and the workers get different FLOTILLA_SECRETS_KEY "
                        "values: workers could not open what the dispatcher seals")
    for name, value in sorted(keys.items()):
        if value and "CHANGE-ME" not in value:
            try:
                Keyring.parse(value)
            except SettingsError as exc:
                problems.append(f"{name}: {exc}")
    return problems


def _container_port(container: Manifest, port: int | str) -> int | None:
    for p in container.get("ports", []):
        if port in (p.get("name"), p["containerPort"]):
            return int(p["containerPort"])
    return None


def check_services(objects: list[Manifest]) -> list[str]:
    """Each Service selects a Deployment's pods, and its targetPorts are container ports."""
    problems = []
    for svc in find(objects, "Service"):
        name = svc["metadata"]["name"]
        selector = svc["spec"].get("selector", {})
        targets = [d for d in find(objects, "Deployment") if _selected(selector, pod_labels(d))]
        if not targets:
            problems.append(f"Service {name}: selector {selector} matches no Deployment's pods")
        for d in targets:
            for port in svc["spec"]["ports"]:
                target = port.get("targetPort", port["port"])
                if not any(_container_port(c, target) for c in pod_spec(d)["containers"]):
                    problems.append(f"Service {name}: targetPort {target!r} is not a "
                                    f"container port of {d['metadata']['name']}")
    return problems


def _serving_port(process: str, env: Mapping[str, str]) -> int:
    if process == "flotilla-worker":
        return WorkerSettings.from_env(env).metrics_port
    return int(DispatcherSettings.from_env(env).listen.rsplit(":", 1)[1])


def check_probes(objects: list[Manifest]) -> list[str]:
    """Liveness on /healthz, readiness on /readyz, at the port the process serves them on."""
    problems = []
    for name, container in _flotilla_containers(objects):
        env = container_env(objects, container)
        known = setting_env_names(PROCESSES[name])
        serving = _serving_port(name, {k: v for k, v in env.items() if k in known})
        if _container_port(container, serving) is None:
            problems.append(f"{name}: serves on {serving}, which is no containerPort")
        for probe_name, path in {**HEALTH_PATHS, "startupProbe": "/healthz"}.items():
            probe = container.get(probe_name)
            if probe is None:
                if probe_name != "startupProbe":
                    problems.append(f"{name}: no {probe_name}")
                continue
            http = probe.get("httpGet")
            if not http or http.get("path") != path:
                problems.append(f"{name}: {probe_name} must GET {path}")
                continue
            if _container_port(container, http["port"]) != serving:
                problems.append(f"{name}: {probe_name} port {http['port']!r} is not the "
                                f"port {serving} the process serves {path} on")
    if name_missing := [n for n in PROCESSES if not find(objects, "Deployment", n)]:
        problems.append(f"missing Deployments: {name_missing}")
    return problems


def check_dispatcher_listens_everywhere(objects: list[Manifest]) -> list[str]:
    """The dispatcher binds all interfaces (its default, 127.0.0.1, is unreachable in a pod)."""
    problems = []
    for name, container in _flotilla_containers(objects):
        if name == "flotilla-dispatcher":
            listen = container_env(objects, container).get("FLOTILLA_LISTEN", "127.0.0.1:8080")
            if listen.rsplit(":", 1)[0] not in ("0.0.0.0", "[::]", "::"):
                problems.append(f"dispatcher listens on {listen}: unreachable from the Service")
    return problems


def check_drain_fits_grace_period(objects: list[Manifest]) -> list[str]:
    """The kubelet's SIGKILL comes after the worker's drain deadline plus a margin."""
    problems = []
    for deployment in find(objects, "Deployment", "flotilla-worker"):
        grace = pod_spec(deployment).get("terminationGracePeriodSeconds", 30)
        for container in pod_spec(deployment)["containers"]:
            env = container_env(objects, container)
            known = setting_env_names(WorkerSettings)
            drain = WorkerSettings.from_env({k: v for k, v in env.items() if k in known})
            if grace < drain.drain_timeout_s + SHUTDOWN_MARGIN_S:
                problems.append(f"terminationGracePeriodSeconds {grace} is not longer than "
                                f"FLOTILLA_DRAIN_TIMEOUT_S {drain.drain_timeout_s} + "
                                f"{SHUTDOWN_MARGIN_S} s")
    return problems


def check_writable_paths(objects: list[Manifest]) -> list[str]:
    """With a read-only root, FLOTILLA_CACHE_DIR and /tmp are mounted volumes."""
    problems = []
    for name, container in _flotilla_containers(objects):
        mounts = {m["mountPath"].rstrip("/") for m in container.get("volumeMounts", [])}
        env = container_env(objects, container)
        for path in (env.get("FLOTILLA_CACHE_DIR", "<unset>"), "/tmp"):
            if path.rstrip("/") not in mounts:
                problems.append(f"{name}: {path} is not a mounted volume")
    return problems


def check_security_contexts(objects: list[Manifest]) -> list[str]:
    """Every pod runs non-root with RuntimeDefault seccomp, read-only root, no capabilities."""
    problems = []
    for deployment in find(objects, "Deployment"):
        spec = pod_spec(deployment)
        pod_sc = spec.get("securityContext", {})
        dname = deployment["metadata"]["name"]
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c.get("securityContext", {})
            where = f"{dname}/{c['name']}"
            if not sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")):
                problems.append(f"{where}: runAsNonRoot is not set")
            if sc.get("runAsUser", pod_sc.get("runAsUser", 0)) == 0:
                problems.append(f"{where}: no non-zero runAsUser")
            seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {}))
            if seccomp.get("type") != "RuntimeDefault":
                problems.append(f"{where}: seccompProfile is not RuntimeDefault")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: root filesystem is writable")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation is not false")
            if sc.get("capabilities", {}).get("drop") != ["ALL"]:
                problems.append(f"{where}: capabilities are not dropped (drop: [ALL])")
            if sc.get("privileged"):
                problems.append(f"{where}: privileged")
    return problems


def check_resources(objects: list[Manifest]) -> list[str]:
    """Every container requests and limits CPU and memory, requests within limits."""
    problems = []
    for deployment in find(objects, "Deployment"):
        for c in pod_spec(deployment)["containers"]:
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in res.get(part, {}):
                        problems.append(f"{deployment['metadata']['name']}/{c['name']}: "
                                        f"no {resource} {part[:-1]}")
            for resource in ("cpu", "memory"):
                try:
                    if quantity(res["requests"][resource]) > quantity(res["limits"][resource]):
                        problems.append(f"{c['name']}: {resource} request above its limit")
                except KeyError:
                    pass
    return problems


_SUFFIXES = {"m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
             "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(value: str | float) -> float:
    """A Kubernetes quantity ("500m", "2", "768Mi") as a number."""
    text = str(value)
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if suffix and text.endswith(suffix):
            return float(text[: -len(suffix)]) * _SUFFIXES[suffix]
    return float(text)


def check_worker_processes(objects: list[Manifest]) -> list[str]:
    """Worker processes fit the CPU limit, and are explicit where no limit caps the default
    (the supervisor would start one per core of the node)."""
    problems = []
    for deployment in find(objects, "Deployment", "flotilla-worker"):
        for c in pod_spec(deployment)["containers"]:
            env = container_env(objects, c)
            known = setting_env_names(WorkerSettings)
            settings = WorkerSettings.from_env({k: v for k, v in env.items() if k in known})
            cpu_limit = c.get("resources", {}).get("limits", {}).get("cpu")
            cpus = math.ceil(quantity(cpu_limit)) if cpu_limit is not None else None
            processes = settings.worker_processes or cpus
            if processes is None:
                problems.append("FLOTILLA_WORKER_PROCESSES is 0 without a CPU limit: the "
                                "supervisor would start a process per core of the node")
                continue
            if cpus is not None and processes > cpus:
                problems.append(f"FLOTILLA_WORKER_PROCESSES {processes} exceeds the CPU "
                                f"limit {cpu_limit}")
            threads = settings.concurrency or (
                PER_PROCESS_CONCURRENCY if processes > 1 else cpus or 1)
            if settings.prefetch and settings.prefetch < threads:
                problems.append("FLOTILLA_PREFETCH below the concurrency leaves slots idle")
    return problems


def check_disruption_budgets(objects: list[Manifest]) -> list[str]:
    """Each PDB selects exactly one Deployment's pods and can never block a node drain."""
    problems = []
    for pdb in find(objects, "PodDisruptionBudget"):
        name = pdb["metadata"]["name"]
        selector = pdb["spec"]["selector"].get("matchLabels", {})
        targets = [d for d in find(objects, "Deployment") if _selected(selector, pod_labels(d))]
        if len(targets) != 1:
            problems.append(f"PDB {name}: selects {len(targets)} Deployments, not 1")
            continue
        if "minAvailable" in pdb["spec"]:
            floor = min_replicas(objects, targets[0]["metadata"]["name"])
            if int(pdb["spec"]["minAvailable"]) >= floor:
                problems.append(f"PDB {name}: minAvailable {pdb['spec']['minAvailable']} with "
                                f"as few as {floor} replicas blocks every eviction")
    for name in PROCESSES:
        if not any(_selected(p["spec"]["selector"].get("matchLabels", {}), pod_labels(d))
                   for p in find(objects, "PodDisruptionBudget")
                   for d in find(objects, "Deployment", name)):
            problems.append(f"{name}: no PodDisruptionBudget")
    return problems


def min_replicas(objects: list[Manifest], deployment: str) -> int:
    """The lowest replica count the autoscalers may give a Deployment."""
    for so in find(objects, "ScaledObject"):
        if so["spec"]["scaleTargetRef"]["name"] == deployment:
            return int(so["spec"].get("minReplicaCount", 0))
    for hpa in find(objects, "HorizontalPodAutoscaler"):
        if hpa["spec"]["scaleTargetRef"]["name"] == deployment:
            return int(hpa["spec"].get("minReplicas", 1))
    return int(find(objects, "Deployment", deployment)[0]["spec"].get("replicas", 1))


def check_dispatcher_autoscaler(objects: list[Manifest]) -> list[str]:
    """An HPA on CPU targets the dispatcher Deployment, whose containers request CPU."""
    hpas = [h for h in find(objects, "HorizontalPodAutoscaler")
            if h["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                               "name": "flotilla-dispatcher"}]
    if len(hpas) != 1:
        return ["no single HorizontalPodAutoscaler targets Deployment flotilla-dispatcher"]
    problems = []
    spec = hpas[0]["spec"]
    if not any(m.get("resource", {}).get("name") == "cpu" for m in spec.get("metrics", [])):
        problems.append("dispatcher HPA does not scale on CPU")
    if not 1 <= spec.get("minReplicas", 1) <= spec["maxReplicas"]:
        problems.append("dispatcher HPA: minReplicas not within 1..maxReplicas")
    for d in find(objects, "Deployment", "flotilla-dispatcher"):
        if "replicas" in d["spec"]:
            problems.append("dispatcher Deployment sets replicas, which fights the HPA")
        for c in pod_spec(d)["containers"]:
            if "cpu" not in c.get("resources", {}).get("requests", {}):
                problems.append("dispatcher HPA on CPU needs a CPU request")
    return problems


def check_worker_autoscaler(objects: list[Manifest]) -> list[str]:
    """The KEDA ScaledObject scales the worker Deployment on the summed depth of the real
    lanes (the sync lane and every job lane: a regular expression, over the management API)."""
    sos = [s for s in find(objects, "ScaledObject")
           if s["spec"]["scaleTargetRef"]["name"] == "flotilla-worker"
           and s["spec"]["scaleTargetRef"].get("kind", "Deployment") == "Deployment"]
    if len(sos) != 1:
        return ["no single ScaledObject targets Deployment flotilla-worker"]
    problems = []
    spec = sos[0]["spec"]
    worker = find(objects, "Deployment", "flotilla-worker")[0]
    if "replicas" in worker["spec"]:
        problems.append("worker Deployment sets replicas, which fights KEDA")
    worker_env = container_env(objects, pod_spec(worker)["containers"][0])
    prefix = worker_env.get("FLOTILLA_QUEUE_PREFIX", "flotilla")
    if not 1 <= spec.get("minReplicaCount", 0) <= spec.get("maxReplicaCount", 100):
        problems.append("ScaledObject: need 1 <= minReplicaCount <= maxReplicaCount")
    down = (spec.get("advanced", {}).get("horizontalPodAutoscalerConfig", {})
            .get("behavior", {}).get("scaleDown"))
    if not down:
        problems.append("ScaledObject: no scale-down behaviour")
    else:
        if down.get("stabilizationWindowSeconds", 0) < 60:
            problems.append("ScaledObject: scale-down stabilization window under 60 s")
        pod_policies = [p for p in down.get("policies", []) if p["type"] == "Pods"]
        if not pod_policies or down.get("selectPolicy", "Max") == "Disabled":
            problems.append("ScaledObject: scale-down is not limited to a number of pods")
    triggers = [t for t in spec["triggers"] if t["type"] == "rabbitmq"]
    if len(triggers) != 1:
        return problems + ["ScaledObject: need exactly one rabbitmq trigger"]
    meta = triggers[0]["metadata"]
    pattern = Topology(prefix=prefix).lane_pattern
    if meta.get("queueName") != pattern:
        problems.append(f"rabbitmq trigger queueName {meta.get('queueName')!r} is not "
                        f"{pattern!r}")
    if str(meta.get("useRegex", "false")).lower() != "true":
        problems.append("rabbitmq trigger: useRegex is not true (the job lanes go unseen)")
    if meta.get("operation", "sum") != "sum":
        problems.append(f"rabbitmq trigger: operation {meta['operation']!r}, not sum")
    if meta.get("protocol") != "http":
        problems.append("rabbitmq trigger: useRegex needs protocol http (management API)")
    if meta.get("mode") != "QueueLength":
        problems.append("rabbitmq trigger mode is not QueueLength")
    auth_name = triggers[0].get("authenticationRef", {}).get("name")
    auths = find(objects, "TriggerAuthentication", auth_name)
    if not auths:
        return problems + [f"TriggerAuthentication {auth_name!r} does not exist"]
    hosts = [r for r in auths[0]["spec"].get("secretTargetRef", []) if r["parameter"] == "host"]
    if len(hosts) != 1:
        return problems + ["TriggerAuthentication: no secretTargetRef for parameter host"]
    secrets = find(objects, "Secret", hosts[0]["name"])
    url = _data(secrets[0]).get(hosts[0]["key"]) if secrets else None
    if url is None:
        return problems + [f"Secret key {hosts[0]['name']}/{hosts[0]['key']} does not exist"]
    if not _same_broker(objects, url, broker_urls(worker_env)):
        problems.append("KEDA watches a different broker than the workers use")
    parts = urlsplit(url)
    if meta.get("protocol", "auto") not in ("auto", parts.scheme.rstrip("s")):
        problems.append(f"trigger protocol {meta['protocol']} does not match {parts.scheme}://")
    vhost = parts.path[1:] or "/"
    if meta.get("vhostName", vhost) != vhost:
        problems.append(f"trigger vhostName {meta['vhostName']!r} is not the URL's {vhost!r}")
    return problems


def check_service_urls(objects: list[Manifest]) -> list[str]:
    """Broker, Redis and AWS endpoint URLs name a Service (or RabbitmqCluster) and port here."""
    ports: dict[str, set[int]] = {}
    for svc in find(objects, "Service"):
        ports[svc["metadata"]["name"]] = {int(p["port"]) for p in svc["spec"]["ports"]}
    for cluster in find(objects, "RabbitmqCluster"):
        # The operator creates a Service named like the cluster, AMQP on 5672.
        ports.setdefault(cluster["metadata"]["name"], set()).add(5672)
    problems = []
    for name, container in _flotilla_containers(objects):
        env = container_env(objects, container)
        urls = [("FLOTILLA_AMQP_URL", u, 5672) for u in broker_urls(env)]
        urls.append(("FLOTILLA_REDIS_URL", env.get("FLOTILLA_REDIS_URL", ""), 6379))
        if env.get("FLOTILLA_AWS_ENDPOINT_URL"):
            urls.append(("FLOTILLA_AWS_ENDPOINT_URL", env["FLOTILLA_AWS_ENDPOINT_URL"], 443))
        for key, url, default_port in urls:
            parts = urlsplit(url)
            pod = key == "FLOTILLA_AMQP_URL" and _node_of(objects, parts.hostname or "")
            if pod and (parts.port or default_port) == 5672:
                continue  # one pod of a RabbitmqCluster, by its stable name
            host = (parts.hostname or "").split(".")[0]
            if (parts.port or default_port) not in ports.get(host, set()):
                problems.append(f"{name}: {key} points at {parts.hostname}:{parts.port}, "
                                "which no Service here serves")
    return problems


def broker_urls(env: Mapping[str, str]) -> list[str]:
    """The broker URLs of a process (FLOTILLA_AMQP_URL is comma-separated)."""
    return [u.strip() for u in env.get("FLOTILLA_AMQP_URL", "").split(",") if u.strip()]


def rabbitmq_nodes(objects: list[Manifest]) -> dict[str, list[str]]:
    """RabbitmqCluster name -> the stable host name of each of its pods (the operator's
    StatefulSet `<name>-server` behind the headless Service `<name>-nodes`)."""
    return {
        c["metadata"]["name"]: [
            f"{c['metadata']['name']}-server-{i}.{c['metadata']['name']}-nodes"
            for i in range(int(c["spec"].get("replicas", 1)))
        ]
        for c in find(objects, "RabbitmqCluster")
    }


def _node_of(objects: list[Manifest], host: str) -> str | None:
    """The RabbitmqCluster whose pod `host` names (also with a namespace suffix), or None."""
    for cluster, hosts in rabbitmq_nodes(objects).items():
        if any(host == h or host.startswith(h + ".") for h in hosts):
            return cluster
    return None


def _same_broker(objects: list[Manifest], url: str, urls: list[str]) -> bool:
    """`url` reaches the broker of `urls`: the same user, password and vhost, and a host that
    is one of theirs or the Service of the RabbitmqCluster their pods belong to."""
    parts = urlsplit(url)
    clusters = {_node_of(objects, urlsplit(u).hostname or "") for u in urls}
    hosts = {urlsplit(u).hostname for u in urls}
    return bool(urls) and all(
        (p.username, p.password, p.path or "/") == (parts.username, parts.password,
                                                     parts.path or "/")
        for p in map(urlsplit, urls)
    ) and (parts.hostname in hosts or (parts.hostname or "").split(".")[0] in clusters)


def check_broker_cluster(objects: list[Manifest]) -> list[str]:
    """Processes given a RabbitmqCluster's pods list all of them (else they cannot move to
    the others), once each; quorum queues have no more replicas than there are nodes, and
    on 3 or more nodes at least 3 (fewer cannot lose a node)."""
    nodes = rabbitmq_nodes(objects)
    problems = []
    for name, container in _flotilla_containers(objects):
        env = container_env(objects, container)
        urls = broker_urls(env)
        hosts = [urlsplit(u).hostname or "" for u in urls]
        if len(set(hosts)) != len(hosts):
            problems.append(f"{name}: FLOTILLA_AMQP_URL names a host twice")
        by_cluster = {c for c in (_node_of(objects, h) for h in hosts) if c}
        for cluster in sorted(by_cluster):
            listed = {h for h in hosts if _node_of(objects, h) == cluster}
            if len(listed) != len(nodes[cluster]):
                problems.append(f"{name}: FLOTILLA_AMQP_URL lists {len(listed)} of the "
                                f"{len(nodes[cluster])} nodes of {cluster}")
        replicas = max((len(h) for h in nodes.values()), default=0)
        size = int(env.get("FLOTILLA_QUORUM_SIZE", "0") or 0)
        if replicas and size > replicas:
            problems.append(f"{name}: quorum size {size} is more than the {replicas} nodes")
        if replicas >= 3 and 0 < size < 3:
            problems.append(f"{name}: quorum size {size} cannot survive losing a node")
    return problems


ALL_CHECKS = (
    check_broker_cluster,
    check_env_references,
    check_setting_names,
    check_secrets_placement,
    check_secrets_key,
    check_services,
    check_probes,
    check_dispatcher_listens_everywhere,
    check_drain_fits_grace_period,
    check_writable_paths,
    check_security_contexts,
    check_resources,
    check_worker_processes,
    check_disruption_budgets,
    check_dispatcher_autoscaler,
    check_worker_autoscaler,
    check_service_urls,
)
