"""The monitoring contract, end to end, with a real Prometheus server.

Two federated daemons share a consumer group on the embedded broker while a producer
streams events (some malformed, some unlabeled). Debian's ``prometheus`` scrapes them
and evaluates ``deploy/prometheus/stream-learner.rules.yml``. Then every query of the
Grafana dashboard and every alert expression runs through Prometheus's HTTP API and
must return data, every rule must evaluate without error, and ``promtool check
metrics`` must accept each daemon's ``/metrics``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from stream_learner.broker import free_port
from stream_learner.federation.keys import generate
from stream_learner.synth import ensure_topics

from conftest import (PROMETHEUS, ROOT, DaemonProcess, http_get, require_tool, unique, wait_for,
                      with_bool)

DASHBOARD = ROOT / "grafana" / "dashboards" / "stream-learner.json"
RULES = ROOT / "deploy" / "prometheus" / "stream-learner.rules.yml"
JOB = "stream-learner"
SCRAPE_S = 2
RATE_INTERVAL = f"{10 * SCRAPE_S}s"   # what Grafana's $__rate_interval is at this scrape rate


def dashboard_exprs() -> list[str]:
    """Every PromQL expression in the dashboard: panels, rows, annotations."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "expr" and isinstance(value, str) and value.strip():
                    found.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(json.loads(DASHBOARD.read_text()))
    return found


def alert_exprs() -> dict[str, str]:
    rules = yaml.safe_load(RULES.read_text())
    return {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"] if "alert" in r}


def grafana_to_promql(expr: str, instances: list[str]) -> str:
    return (expr.replace("$__rate_interval", RATE_INTERVAL)
            .replace("${job}", JOB).replace("$job", JOB)
            .replace("${instance}", "|".join(instances)).replace("$instance", "|".join(instances)))


class Prometheus:
    def __init__(self, tmp: Path, targets: list[str]) -> None:
        self.port = free_port()
        config = {"global": {"scrape_interval": f"{SCRAPE_S}s",
                             "evaluation_interval": f"{SCRAPE_S}s"},
                  "rule_files": [str(RULES)],
                  "scrape_configs": [{"job_name": JOB,
                                      "static_configs": [{"targets": targets}]}]}
        cfg = tmp / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(config))
        check = subprocess.run([require_tool("promtool", PROMETHEUS), "check", "config", str(cfg)],
                               capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, check.stdout + check.stderr
        self.log = open(tmp / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            [require_tool("prometheus", PROMETHEUS), f"--config.file={cfg}",
             f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=self.log)

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        code, body = http_get(url, timeout=10)
        doc = json.loads(body)
        assert code == 200 and doc["status"] == "success", f"{url}: {code} {body[:500]}"
        return doc["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", (expr, data["resultType"])
        return data["result"]

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture(scope="module")
def stack(broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("live")
    bs = broker.bootstrap_servers
    topic, group, fed_topic = unique("live"), unique("g"), unique("live-fed")
    ensure_topics(bs, {topic: 2, f"{topic}.dlq": 1, f"{topic}.predictions": 1, fed_topic: 1})
    peers = tmp / "peers"
    peers.mkdir()
    for name in ("site-a", "site-b"):
        generate(tmp / "keys", name)
        shutil.copy(tmp / "keys" / f"{name}.pub", peers / f"{name}.pub")
    producer = subprocess.Popen(
        [sys.executable, "-m", "stream_learner", "produce", "--stream", "mixed", "--count",
         "1000000", "--rate", "800", "--unlabeled-fraction", "0.02", "--drift-every", "5000",
         "--topic", topic, "--bootstrap-servers", bs],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    daemons: list[DaemonProcess] = []
    prom: Prometheus | None = None
    try:
        for name in ("site-a", "site-b"):
            env = {"STREAM_LEARNER_CHECKPOINT__EVERY_SECONDS": "2",
                   "STREAM_LEARNER_FEDERATION__PRIVATE_KEY_FILE": str(tmp / "keys" / f"{name}.key"),
                   "STREAM_LEARNER_FEDERATION__PEERS_DIR": str(peers),
                   "STREAM_LEARNER_FEDERATION__TOPIC": fed_topic,
                   "STREAM_LEARNER_FEDERATION__EVERY_SECONDS": "2"}
            daemons.append(DaemonProcess(bs, tmp / name / "ckpt", topic, group, extra_env=env))
        prom = Prometheus(tmp, [f"127.0.0.1:{d.port}" for d in daemons])
        for d in daemons:
            wait_for(lambda: d.assert_alive() or d.metric("stream_learner_ready") == 1, 120,
                     f"daemon consuming (log: {d.log_path})")
            wait_for(lambda: d.metric("stream_learner_federation_updates_received_total") > 0,
                     60, f"a peer's update (log: {d.log_path})")
        # Enough history for every rate window and two rule evaluations after it.
        time.sleep(int(RATE_INTERVAL[:-1]) + 3 * SCRAPE_S)
        p = prom
        wait_for(lambda: all(t["health"] == "up" for t in p.api("targets")["activeTargets"]),
                 30, "both targets up")
        yield {"prometheus": prom, "daemons": daemons,
               "instances": [f"127.0.0.1:{d.port}" for d in daemons]}
    finally:
        producer.kill()
        producer.wait(10)
        if prom is not None:
            prom.close()
        for d in daemons:
            d.close()


def test_every_dashboard_query_returns_data(stack: dict[str, Any]) -> None:
    prom: Prometheus = stack["prometheus"]
    on_gpu = bool(prom.query('stream_learner_model_info{device=~"cuda.*"}'))
    exprs = dashboard_exprs()
    assert len(exprs) >= 20, exprs
    empty = []
    for expr in exprs:
        # Conditions (the drift annotation: "> 0") as 0/1 series, like the alerts.
        result = prom.query(with_bool(grafana_to_promql(expr, stack["instances"])))
        if "gpu_memory" in expr and not on_gpu:
            assert result == [], f"GPU series on a CPU model: {expr}"
        elif not result:
            empty.append(expr)
    assert not empty, "dashboard queries without data:\n" + "\n".join(empty)


def test_dashboard_variables_find_both_daemons(stack: dict[str, Any]) -> None:
    prom: Prometheus = stack["prometheus"]
    templating = json.loads(DASHBOARD.read_text())["templating"]["list"]
    queries = {v["name"]: v.get("query") for v in templating}
    for name in ("job", "instance"):
        query = queries[name]
        query = query["query"] if isinstance(query, dict) else query
        metric = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query.strip())
        assert metric and metric.group(2) == name, query
        series = prom.query(metric.group(1).replace("$job", JOB))
        assert {s["metric"][name] for s in series} >= (
            {JOB} if name == "job" else set(stack["instances"]))


def test_every_alert_expression_returns_data_and_evaluates_cleanly(stack: dict[str, Any]) -> None:
    prom: Prometheus = stack["prometheus"]
    alerts = alert_exprs()
    assert len(alerts) >= 6, alerts
    for name, expr in alerts.items():
        result = prom.query(with_bool(expr))
        assert result, f"{name}: no data for {with_bool(expr)}"
        instances = {s["metric"].get("instance") for s in result}
        assert instances <= set(stack["instances"]), (name, instances)
    groups = prom.api("rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert {r["name"] for r in rules if r["type"] == "alerting"} == set(alerts)
    bad = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert not bad, bad



def test_a_healthy_stream_holds_no_alert_condition(stack: dict[str, Any]) -> None:
    """Not only "nothing firing": every alert has ``for:`` >= 1 min and this stack lives
    less than that, so a firing check could never fail. Nothing may be pending either,
    and each alert's expression, evaluated now, must select no series."""
    prom: Prometheus = stack["prometheus"]
    active = [(a["labels"]["alertname"], a["state"], a["labels"].get("instance"))
              for a in prom.api("alerts")["alerts"]]
    assert not active, f"pending or firing on a healthy stream: {active}"
    holding = {name: [s["metric"].get("instance") for s in prom.query(expr)]
               for name, expr in alert_exprs().items()}
    holding = {name: instances for name, instances in holding.items() if instances}
    assert not holding, f"alert conditions true on a healthy stream: {holding}"


def test_promtool_accepts_the_exposition(stack: dict[str, Any]) -> None:
    for d in stack["daemons"]:
        code, text = http_get(d.url + "/metrics")
        assert code == 200
        res = subprocess.run([require_tool("promtool", PROMETHEUS), "check", "metrics"], input=text,
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "stream_learner_worker_process_cpu_seconds_total" in text
        assert "process_start_time_seconds" in text
