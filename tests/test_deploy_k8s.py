"""deploy/k8s: both overlays render, validate against the Kubernetes API schemas, and
agree with the code (settings, env var names, HTTP paths, CLI, ports, mounts).

Everything runs offline: `kubectl kustomize` renders, kubernetes-validate carries the
schemas. A missing kubectl fails the tests (never skips): without it nothing is checked.
"""

from __future__ import annotations

import functools
import re
import subprocess
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate
import pytest
import yaml

from stream_learner import __version__
from stream_learner.cli import build_parser
from stream_learner.config import describe_settings, load_settings
from stream_learner.federation.keys import generate
from stream_learner.federation.transport import Federation
from stream_learner.metrics import Health, Metrics, MetricsServer

from conftest import require_tool

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
DOCKERFILE = ROOT / "deploy" / "container" / "Dockerfile"
OVERLAYS = ("cpu", "gpu")
# The oldest minor still in common support and the one our kubectl speaks.
K8S_VERSIONS = ("1.30", "1.32")
CONTAINER = "stream-learner"
POD_NAME = "stream-learner-0"        # what $(POD_NAME) expands to on the first replica

Obj = dict[str, Any]


# -- helpers -------------------------------------------------------------------------------
@functools.cache
def render(overlay: str) -> tuple[Obj, ...]:
    kubectl = require_tool("kubectl", "install kubectl >= 1.27 (it embeds kustomize); the "
                           "deploy/k8s tests render the overlays with `kubectl kustomize`")
    proc = subprocess.run([kubectl, "kustomize", str(K8S / "overlays" / overlay)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"kubectl kustomize {overlay} failed:\n{proc.stderr}"
    return tuple(d for d in yaml.safe_load_all(proc.stdout) if d)


def the(objs: tuple[Obj, ...], kind: str) -> Obj:
    found = [o for o in objs if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def statefulset(overlay: str) -> Obj:
    return the(render(overlay), "StatefulSet")


def pod_spec(overlay: str) -> Obj:
    return statefulset(overlay)["spec"]["template"]["spec"]


def container(overlay: str) -> Obj:
    found = [c for c in pod_spec(overlay)["containers"] if c["name"] == CONTAINER]
    assert len(found) == 1, f"no container named {CONTAINER}"
    return found[0]


def all_containers(overlay: str) -> list[Obj]:
    spec = pod_spec(overlay)
    return [*spec.get("initContainers", []), *spec["containers"]]


def mount(overlay: str, volume: str) -> Obj:
    found = [m for m in container(overlay)["volumeMounts"] if m["name"] == volume]
    assert len(found) == 1, f"volume {volume} is not mounted once"
    return found[0]


def volume(overlay: str, name: str) -> Obj:
    found = [v for v in pod_spec(overlay)["volumes"] if v["name"] == name]
    assert len(found) == 1, f"no pod volume {name}"
    return found[0]


def volume_of_kind(overlay: str, kind: str) -> Obj:
    found = [v for v in pod_spec(overlay)["volumes"] if kind in v]
    assert len(found) == 1, f"expected one {kind} volume, found {len(found)}"
    return found[0]


def config_path(overlay: str) -> PurePosixPath:
    args = build_parser().parse_args(container(overlay)["args"])
    return PurePosixPath(str(args.config))


def config_text(overlay: str) -> str:
    """The config.yaml the container reads: the ConfigMap key named like --config's file."""
    cm = the(render(overlay), "ConfigMap")
    key = config_path(overlay).name
    assert key in cm["data"], f"ConfigMap {cm['metadata']['name']} has no key {key}"
    return str(cm["data"][key])


def container_port(overlay: str, name: str) -> int:
    ports = {p["name"]: p["containerPort"] for p in container(overlay)["ports"]}
    assert name in ports, f"container has no port named {name}: {sorted(ports)}"
    return int(ports[name])


def literal_env(overlay: str) -> dict[str, str]:
    """Env vars with a plain value, $(POD_NAME) expanded as the kubelet does."""
    return {e["name"]: str(e["value"]).replace("$(POD_NAME)", POD_NAME)
            for e in container(overlay).get("env", []) if "value" in e}


def settings_env_names() -> set[str]:
    return {env for _, env, _, _ in describe_settings()}


def load_config(text: str, tmp_path: Path) -> Any:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return load_settings(path)


def uncomment_federation(text: str) -> str:
    """The config with its commented-out `# federation:` block switched on."""
    lines = text.splitlines()
    start = lines.index("# federation:")
    end = start + 1
    while end < len(lines) and lines[end].startswith("#   "):
        end += 1
    block = [line[2:] for line in lines[start:end]]
    return "\n".join([*lines[:start], *block, *lines[end:]]) + "\n"


def is_under(path: PurePosixPath, directory: str) -> bool:
    return path == PurePosixPath(directory) or PurePosixPath(directory) in path.parents


def probes(overlay: str) -> dict[str, Obj]:
    c = container(overlay)
    return {k: c[k] for k in ("startupProbe", "livenessProbe", "readinessProbe") if k in c}


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def selects(selector: Obj, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels and matchExpressions) applied as the API server does."""
    if not matches(selector.get("matchLabels") or {}, labels):
        return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values", [])
        ok = {"In": key in labels and labels[key] in values,
              "NotIn": key not in labels or labels[key] not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True


def ingress_allowed(policy: Obj, namespace: dict[str, str], pod: dict[str, str],
                    port: str) -> bool:
    """Whether a pod (labels, in a namespace with these labels) may reach ``port``."""
    for rule in policy["spec"].get("ingress", []):
        if not any(p.get("port") == port and p.get("protocol", "TCP") == "TCP"
                   for p in rule.get("ports", [])):
            continue
        for peer in rule.get("from", []):
            if "ipBlock" in peer:
                continue
            ns_ok = "namespaceSelector" in peer and selects(peer["namespaceSelector"], namespace)
            pod_ok = selects(peer.get("podSelector", {}), pod)
            if "namespaceSelector" not in peer:
                ns_ok = False         # own namespace only: not a Prometheus elsewhere
            if ns_ok and pod_ok:
                return True
    return False


def dockerfile_instruction(name: str) -> list[str]:
    """Arguments of every `name` instruction, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    return [m.group(1).strip() for m in re.finditer(rf"^{name}\s+(.+)$", text, re.MULTILINE)]


# -- schema ------------------------------------------------------------------------------
@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_objects_match_the_kubernetes_schemas(overlay: str, version: str) -> None:
    for obj in render(overlay):
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            continue        # a CRD: checked structurally below
        kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_every_expected_object(overlay: str) -> None:
    kinds = sorted(o["kind"] for o in render(overlay))
    assert kinds == ["ConfigMap", "NetworkPolicy", "PodDisruptionBudget", "Service",
                     "ServiceMonitor", "StatefulSet"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_servicemonitor_selects_the_service_and_its_port(overlay: str) -> None:
    objs = render(overlay)
    sm, svc = the(objs, "ServiceMonitor"), the(objs, "Service")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    selector = sm["spec"]["selector"]
    assert set(selector) <= {"matchLabels", "matchExpressions"}
    assert selector.get("matchLabels"), "an empty selector would match every Service"
    assert matches(selector["matchLabels"], svc["metadata"]["labels"])
    ns = sm["spec"].get("namespaceSelector")
    # absent = the ServiceMonitor's own namespace, where the Service is (no namespace pinned)
    assert ns is None or ns.get("any") is True or (
        isinstance(ns.get("matchNames"), list) and ns["matchNames"])
    service_ports = {p["name"] for p in svc["spec"]["ports"]}
    for endpoint in sm["spec"]["endpoints"]:
        assert endpoint["port"] in service_ports
        assert endpoint["path"] == "/metrics"
        assert endpoint["interval"] == "15s"


# -- cross-references with the code --------------------------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_stream_learner_env_var_is_a_setting(overlay: str) -> None:
    known = settings_env_names()
    for c in all_containers(overlay):
        names = {e["name"] for e in c.get("env", [])}
        unknown = {n for n in names if n.startswith("STREAM_LEARNER_")} - known
        assert not unknown, f"not settings (silently ignored by the daemon): {unknown}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_env_references_name_earlier_env_vars(overlay: str) -> None:
    # The kubelet expands $(NAME) only for NAME defined earlier in the list; otherwise the
    # text stays as is, and a key file named "$(POD_NAME).key" is looked for.
    for c in all_containers(overlay):
        defined: set[str] = set()
        for e in c.get("env", []):
            for ref in re.findall(r"\$\((\w+)\)", str(e.get("value", ""))):
                assert ref in defined, f"{e['name']} uses $({ref}) before it is defined"
            defined.add(e["name"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_configmap_config_loads_with_the_pod_env(overlay: str, tmp_path: Path,
                                                 clean_env: pytest.MonkeyPatch) -> None:
    for name, value in literal_env(overlay).items():
        clean_env.setenv(name, value)
    s = load_config(config_text(overlay), tmp_path)
    assert s.kafka.bootstrap_servers and s.kafka.client_id == POD_NAME
    assert s.log.json_format is True
    assert s.model.device == {"cpu": "cpu", "gpu": "cuda"}[overlay]
    assert not s.federation.enabled, "federation must stay off until configured"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_metrics_port_is_the_container_port_named_metrics(overlay: str, tmp_path: Path,
                                                          clean_env: pytest.MonkeyPatch) -> None:
    s = load_config(config_text(overlay), tmp_path)
    assert s.metrics.port == container_port(overlay, "metrics")
    assert s.metrics.host == "0.0.0.0"      # reachable by the kubelet's probes


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_checkpoint_dir_is_on_the_pods_own_volume(overlay: str, tmp_path: Path,
                                                  clean_env: pytest.MonkeyPatch) -> None:
    s = load_config(config_text(overlay), tmp_path)
    claims = {t["metadata"]["name"]: t for t in statefulset(overlay)["spec"]["volumeClaimTemplates"]}
    assert "checkpoints" in claims
    assert claims["checkpoints"]["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert is_under(PurePosixPath(str(s.checkpoint.dir)), mount(overlay, "checkpoints")["mountPath"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_image_checkpoint_env_agrees_with_the_configmap(overlay: str, tmp_path: Path,
                                                        clean_env: pytest.MonkeyPatch) -> None:
    # The image's ENV wins over config.yaml: were they different, the file would be ignored.
    env = " ".join(dockerfile_instruction("ENV"))
    image_dir = re.search(r"STREAM_LEARNER_CHECKPOINT__DIR=(\S+)", env)
    assert image_dir is not None
    s = load_config(config_text(overlay), tmp_path)
    assert str(s.checkpoint.dir) == image_dir.group(1)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probe_service_and_monitor_ports_are_container_ports(overlay: str) -> None:
    names = {p["name"] for p in container(overlay)["ports"]}
    for kind, probe in probes(overlay).items():
        assert probe["httpGet"]["port"] in names, kind
    svc = the(render(overlay), "Service")
    for port in svc["spec"]["ports"]:
        assert port["targetPort"] in names
        assert port["port"] == container_port(overlay, port["targetPort"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_use_health_and_readiness_endpoints(overlay: str) -> None:
    p = probes(overlay)
    assert set(p) == {"startupProbe", "livenessProbe", "readinessProbe"}
    assert p["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert p["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert p["readinessProbe"]["httpGet"]["path"] == "/readyz"
    startup = p["startupProbe"]
    # torch import + learner warm-up + checkpoint load: minutes, not seconds, on a cold node
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120


def test_probe_paths_are_served_by_the_daemon() -> None:
    paths = {p["httpGet"]["path"] for o in OVERLAYS for p in probes(o).values()}
    paths |= {e["path"] for o in OVERLAYS for e in the(render(o), "ServiceMonitor")["spec"]["endpoints"]}
    server = MetricsServer(Metrics(), Health(60.0), "127.0.0.1", 0).start()
    try:
        for path in sorted(paths):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}",
                                            timeout=5) as resp:
                    status = resp.status
            except urllib.error.HTTPError as exc:
                status = exc.code
            # /readyz is 503 until a partition is assigned: served, just not ready
            assert status != 404, f"{path} is not served"
            if path in ("/healthz", "/metrics"):
                assert status == 200, path
    finally:
        server.stop()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_container_args_parse_and_read_the_configmap(overlay: str) -> None:
    c = container(overlay)
    assert "command" not in c, "the image's ENTRYPOINT (stream-learner) is expected"
    args = build_parser().parse_args(c["args"])
    assert args.command == "run"
    cfg = mount(overlay, volume_of_kind(overlay, "configMap")["name"])
    assert str(config_path(overlay).parent) == cfg["mountPath"]
    cm = the(render(overlay), "ConfigMap")
    assert volume_of_kind(overlay, "configMap")["configMap"]["name"] == cm["metadata"]["name"]
    assert config_path(overlay).name in cm["data"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_federation_config_matches_the_secret_mount(overlay: str, tmp_path: Path,
                                                    clean_env: pytest.MonkeyPatch) -> None:
    secret_volume = volume_of_kind(overlay, "secret")
    documented = yaml.safe_load((K8S / "base" / "secret-federation.yaml").read_text())
    assert secret_volume["secret"]["secretName"] == documented["metadata"]["name"]
    assert documented["type"] == "Opaque" and not documented.get("data")
    assert secret_volume["secret"]["optional"] is True, "pods must start without the Secret"
    assert secret_volume["secret"]["defaultMode"] == 0o440
    mount_path = mount(overlay, secret_volume["name"])["mountPath"]
    env = literal_env(overlay)
    key_file = PurePosixPath(env["STREAM_LEARNER_FEDERATION__PRIVATE_KEY_FILE"])
    assert key_file.parent == PurePosixPath(mount_path) and key_file.stem == POD_NAME
    for name, value in env.items():
        clean_env.setenv(name, value)
    s = load_config(uncomment_federation(config_text(overlay)), tmp_path)
    assert s.federation.enabled
    assert str(s.federation.peers_dir) == mount_path


def test_federation_starts_from_the_documented_secret(tmp_path: Path,
                                                     clean_env: pytest.MonkeyPatch) -> None:
    # The Secret as secret-federation.yaml says to fill it: one key pair per pod, named
    # after it, all in the mount. Pod 0 must sign as itself and trust the other pods.
    overlay = "cpu"
    mount_path = mount(overlay, volume_of_kind(overlay, "secret")["name"])["mountPath"]
    keys = tmp_path / "federation"
    pods = [f"stream-learner-{i}" for i in range(statefulset(overlay)["spec"]["replicas"])]
    for pod in pods:
        generate(keys, pod)
    for name, value in literal_env(overlay).items():
        clean_env.setenv(name, value.replace(mount_path, str(keys)))
    text = uncomment_federation(config_text(overlay)).replace(mount_path, str(keys))
    fed = Federation(load_config(text, tmp_path), Metrics().federation)
    try:
        assert fed.peer_id == POD_NAME
        assert sorted(fed.allowlist) == [p for p in pods if p != POD_NAME]
    finally:
        fed.close()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secret_is_not_rendered(overlay: str) -> None:
    # An empty Secret in every `kubectl apply -k` would erase keys added out of band.
    assert not [o for o in render(overlay) if o["kind"] == "Secret"]


# -- operations ------------------------------------------------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grace_period_covers_the_final_checkpoint(overlay: str) -> None:
    # producer flush (30 s) + checkpoint write + commit + leaving the group
    assert pod_spec(overlay)["terminationGracePeriodSeconds"] >= 60


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_requests_and_limits(overlay: str) -> None:
    for c in all_containers(overlay):
        res = c.get("resources", {})
        for part in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(res.get(part, {})), f"{c['name']} {part}"


def test_gpu_overlay_asks_for_a_gpu_and_cuda() -> None:
    c = container("gpu")
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert literal_env("gpu")["STREAM_LEARNER_MODEL__DEVICE"] == "cuda"
    tolerations = pod_spec("gpu").get("tolerations", [])
    assert any(t["key"] == "nvidia.com/gpu" for t in tolerations)


def test_cpu_overlay_asks_for_no_gpu() -> None:
    c = container("cpu")
    for part in ("requests", "limits"):
        assert not [k for k in c["resources"][part] if k.endswith("/gpu")]
    assert literal_env("cpu")["STREAM_LEARNER_MODEL__DEVICE"] == "cpu"
    assert "tolerations" not in pod_spec("cpu")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_image_tag_is_the_package_version(overlay: str) -> None:
    variant = {"cpu": "cpu", "gpu": "cuda"}[overlay]
    assert container(overlay)["image"].endswith(f":{__version__}-{variant}")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_as_the_images_non_root_user(overlay: str) -> None:
    spec = pod_spec(overlay)
    pod_sc = spec["securityContext"]
    assert pod_sc["runAsNonRoot"] is True
    assert str(pod_sc["runAsUser"]) == dockerfile_instruction("USER")[-1] == "10001"
    assert pod_sc["fsGroup"] == pod_sc["runAsUser"]
    assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault"
    for c in all_containers(overlay):
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"]["drop"] == ["ALL"]
    assert "emptyDir" in volume(overlay, mount(overlay, "tmp")["name"])
    assert mount(overlay, "tmp")["mountPath"] == "/tmp"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_statefulset_shape(overlay: str) -> None:
    sts, svc = statefulset(overlay), the(render(overlay), "Service")
    assert sts["spec"]["replicas"] == 2
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    assert sts["spec"]["serviceName"] == svc["metadata"]["name"]
    assert svc["spec"]["clusterIP"] == "None"


PROMETHEUS_NS = {"kubernetes.io/metadata.name": "monitoring"}
PROMETHEUS_POD = {"app.kubernetes.io/name": "prometheus", "prometheus": "k8s"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_networkpolicy_lets_only_prometheus_reach_the_metrics_port(overlay: str) -> None:
    policy = the(render(overlay), "NetworkPolicy")
    labels = statefulset(overlay)["spec"]["template"]["metadata"]["labels"]
    assert selects(policy["spec"]["podSelector"], labels), "policy misses the learners"
    assert policy["spec"]["podSelector"].get("matchLabels"), "an empty podSelector " \
        "would apply the policy to every pod of the namespace"
    assert policy["spec"]["policyTypes"] == ["Ingress"]   # egress: Kafka, wherever it is
    ports = {p["port"] for r in policy["spec"]["ingress"] for p in r["ports"]}
    assert ports == {"metrics"} and "metrics" in {p["name"] for p in container(overlay)["ports"]}
    # Prometheus gets in, on the metrics port only ...
    assert ingress_allowed(policy, PROMETHEUS_NS, PROMETHEUS_POD, "metrics")
    assert not ingress_allowed(policy, PROMETHEUS_NS, PROMETHEUS_POD, "http")
    # ... and nothing else: not a pod beside the learners, not another learner, not
    # Prometheus-labelled pods of another namespace.
    own_ns = {"kubernetes.io/metadata.name": "default"}
    assert not ingress_allowed(policy, own_ns, {"app": "curl"}, "metrics")
    assert not ingress_allowed(policy, own_ns, labels, "metrics")
    assert not ingress_allowed(policy, own_ns, PROMETHEUS_POD, "metrics")
    assert not ingress_allowed(policy, PROMETHEUS_NS, {"app": "grafana"}, "metrics")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_selectors_match_the_pod_labels(overlay: str) -> None:
    objs = render(overlay)
    labels = statefulset(overlay)["spec"]["template"]["metadata"]["labels"]
    assert matches(statefulset(overlay)["spec"]["selector"]["matchLabels"], labels)
    assert matches(the(objs, "Service")["spec"]["selector"], labels)
    pdb = the(objs, "PodDisruptionBudget")
    assert matches(pdb["spec"]["selector"]["matchLabels"], labels)
    assert pdb["spec"]["maxUnavailable"] == 1
    assert labels.get("app.kubernetes.io/name") == "stream-learner"
