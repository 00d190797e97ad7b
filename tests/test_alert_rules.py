"""deploy/prometheus/stream-learner.rules.yml: promtool, its unit tests, and the contract.

* ``promtool check rules`` and ``promtool test rules`` pass (output printed on failure);
* every alert we promise exists, with ``for:``, a ``severity``, a summary, a description and
  a runbook URL pointing at its docs/operations.md section (``#alert-<lowercase name>``);
* the unit tests have, for every alert, a case where it fires and one where it must not;
* every metric an alert reads is one the daemon exports;
* with ``bool`` on every comparison (what tests/test_prometheus_live.py does against a real
  Prometheus), every alert expression returns exactly one sample per healthy daemon
  after a few scrapes, here on series built from the daemon's own registry.

promtool comes with Debian's ``prometheus`` package (``./dev setup``); without it these
tests fail, never skip.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream_learner.config import Settings
from stream_learner.metrics import Metrics

from conftest import PROMETHEUS, require_tool, with_bool

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "stream-learner.rules.yml"
RULES_TEST = ROOT / "deploy" / "prometheus" / "stream-learner.rules.test.yml"

ALERTS = {
    "StreamLearnerAccuracyDrop",
    "StreamLearnerConsumerLagGrowing",
    "StreamLearnerStalled",
    "StreamLearnerNoEvents",
    "StreamLearnerCheckpointStale",
    "StreamLearnerCheckpointFailing",
    "StreamLearnerFederationRejects",
    "StreamLearnerLabelJoinsFailing",
    "StreamLearnerRestartLoop",
    "StreamLearnerDown",
}
RUNBOOK_BASE = "https://github.com/stream-learner/stream-learner/blob/main/docs/operations.md#"
OPERATIONS = Path(__file__).resolve().parent.parent / "docs" / "operations.md"
SEVERITIES = {"warning", "critical"}

# Standard process series (prometheus_client's ProcessCollector), for the daemon and,
# namespaced, for its learner worker. Accepted from this list as well as from Metrics()
# because they were added while these rules were written; once Metrics() exports them
# everywhere this list is redundant, not wrong.
PROCESS_SERIES = {
    f"{prefix}process_{name}"
    for prefix in ("", "stream_learner_worker_")
    for name in ("start_time_seconds", "cpu_seconds_total", "resident_memory_bytes",
                 "virtual_memory_bytes", "open_fds", "max_fds")
}

# Prometheus's own per-target series (StreamLearnerDown), not the daemon's.
SCRAPE_SERIES = {"up"}

PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "group", "stddev", "stdvar", "topk", "bottomk",
    "quantile", "count_values", "by", "without", "on", "ignoring", "group_left",
    "group_right", "and", "or", "unless", "bool", "offset", "atan2", "inf", "nan",
}


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([require_tool("promtool", PROMETHEUS), *args], capture_output=True,
                         text=True, timeout=120)
    print(f"$ promtool {' '.join(args)}  (rc {res.returncode})\n{res.stdout}{res.stderr}")
    return res


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alert_rules() -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in load(RULES)["groups"] for r in g["rules"] if "alert" in r}


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (PromQL without string literals in selectors'
    names: matchers, ranges, grouping lists, functions and keywords are removed)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)                        # label matchers
    e = re.sub(r"\[[^\]]*\]", " ", e)                       # ranges, subqueries
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][\w:]*)(\s*\()?", e):
        word, call = m.group(1), m.group(2)
        if call or word in PROMQL_WORDS or re.fullmatch(r"\d+[smhdwy]", word):
            continue
        names.add(word)
    return names


def exported_names() -> set[str]:
    """Series names on the wire of a daemon's registry (counters with _total, ...)."""
    m = Metrics()
    m.drift.declare(Settings())
    m.declare_outputs([Settings().kafka.dlq_topic, Settings().kafka.predictions_topic])
    names: set[str] = set()
    for family in m.registry.collect():
        base = family.name
        if family.type == "counter":
            names |= {base + "_total", base + "_created"}
        elif family.type == "histogram":
            names |= {base + s for s in ("_bucket", "_sum", "_count", "_created")}
        elif family.type == "summary":
            names |= {base, base + "_sum", base + "_count", base + "_created"}
        elif family.type == "info":
            names.add(base + "_info")
        else:
            names.add(base)
        names |= {s.name for s in family.samples}
    return names


# ---------------------------------------------------------------------------- promtool

def test_promtool_check_rules() -> None:
    res = run_promtool("check", "rules", str(RULES))
    assert res.returncode == 0, res.stdout + res.stderr


def test_promtool_unit_tests() -> None:
    res = run_promtool("test", "rules", str(RULES_TEST))
    assert res.returncode == 0, res.stdout + res.stderr


# ---------------------------------------------------------------------------- the contract

def test_one_group_with_every_alert() -> None:
    groups = load(RULES)["groups"]
    assert [g["name"] for g in groups] == ["stream-learner"]
    rules = alert_rules()
    assert set(rules) >= ALERTS, f"missing: {sorted(ALERTS - set(rules))}"
    assert all(name.startswith("StreamLearner") for name in rules), sorted(rules)


@pytest.mark.parametrize("name", sorted(ALERTS))
def test_alert_has_for_severity_and_annotations(name: str) -> None:
    rule = alert_rules()[name]
    assert rule.get("for"), f"{name}: no for:"
    assert re.fullmatch(r"\d+[smh]", str(rule["for"])), rule["for"]
    assert rule.get("labels", {}).get("severity") in SEVERITIES, rule.get("labels")
    ann = rule.get("annotations", {})
    for key in ("summary", "description"):
        assert ann.get(key, "").strip(), f"{name}: no {key}"
    runbook = ann.get("runbook_url") or ann.get("runbook")
    assert runbook == f"{RUNBOOK_BASE}alert-{name.lower()}", runbook
    assert f"\n### Alert: {name}\n" in OPERATIONS.read_text(), f"{name}: no runbook section"


@pytest.mark.parametrize("name", sorted(ALERTS))
def test_alert_expr_is_one_series_per_daemon(name: str) -> None:
    """Grouped by (job, instance) and free of constructs that make the bool form empty."""
    expr = alert_rules()[name]["expr"]
    for construct in (r"\bunless\b", r"\babsent(_over_time)?\s*\(", r"\bor\b", r"\bvector\s*\("):
        assert not re.search(construct, expr), f"{name}: {construct} in {expr}"
    for agg in re.finditer(r"\b(sum|max|min|avg|count)\s+by\s*\(([^)]*)\)", expr):
        assert [s.strip() for s in agg.group(2).split(",")] == ["job", "instance"], agg.group(0)
    for join in re.finditer(r"\b(and|on)\s*\(([^)]*)\)", expr):
        assert [s.strip() for s in join.group(2).split(",")] == ["job", "instance"], join.group(0)
    # Comparisons are written " op " (the live test's substitution needs the spaces).
    assert not re.search(r"\S(==|!=|>=|<=|>|<)|(==|!=|>=|<=|>|<)(?!=)\S", expr), expr


def test_unit_tests_cover_every_alert_firing_and_quiet() -> None:
    rules = alert_rules()
    firing: dict[str, int] = {}
    quiet: dict[str, int] = {}
    for group in load(RULES_TEST)["tests"]:
        instances = set(re.findall(r'instance="([^"]+)"',
                                   " ".join(s["series"] for s in group["input_series"])))
        alerted = {a["exp_labels"]["instance"] for case in group.get("alert_rule_test", [])
                   for a in case.get("exp_alerts") or []}
        healthy = {i for i in instances if i.startswith("healthy:")}
        assert healthy and not healthy & alerted, f"{group['name']}: no quiet healthy daemon"
        for case in group.get("alert_rule_test", []):
            name = case["alertname"]
            assert name in rules, f"test for unknown alert {name}"
            expected = case.get("exp_alerts") or []
            if not expected:
                quiet[name] = quiet.get(name, 0) + 1
            for alert in expected:
                firing[name] = firing.get(name, 0) + 1
                labels = alert["exp_labels"]
                # One alert per daemon: the rule's labels plus job and instance, no more.
                assert set(labels) == {"severity", "job", "instance"}, (name, labels)
                assert labels["severity"] == rules[name]["labels"]["severity"], (name, labels)
                assert set(alert.get("exp_annotations", {})) == set(rules[name]["annotations"])
    assert set(firing) == set(rules), f"never fires in a test: {sorted(set(rules) - set(firing))}"
    assert set(quiet) == set(rules), f"no must-not-fire case: {sorted(set(rules) - set(quiet))}"


def test_alerts_read_only_series_the_daemon_exports() -> None:
    exported = exported_names() | PROCESS_SERIES | SCRAPE_SERIES
    for name, rule in alert_rules().items():
        used = metric_names(rule["expr"])
        assert used, f"{name}: no metric found in {rule['expr']}"
        unknown = used - exported
        assert not unknown, f"{name} reads series the daemon does not export: {sorted(unknown)}"


def test_metric_name_parser() -> None:
    expr = ('time() - max by (job, instance) (stream_learner_checkpoint_last_success_timestamp'
            '_seconds{job="x"}) > 600\nand on (job, instance)\nsum by (job, instance) '
            '(increase(stream_learner_events_consumed_total[5m] offset 1m)) > 0')
    assert metric_names(expr) == {"stream_learner_checkpoint_last_success_timestamp_seconds",
                                  "stream_learner_events_consumed_total"}
    assert with_bool("a > 0.5 and on (job) b\n  == 0") == "a > bool 0.5 and on (job) b\n  == bool 0"


# ------------------------------------------------------------ the bool form has data

def healthy_daemon_series(instance: str, samples: int, step_s: int) -> list[dict[str, str]]:
    """Input series for promtool: a daemon's own registry, as the daemon sets it up and
    after it has consumed events for a while (counters rising, lag on a partition)."""
    m = Metrics()
    m.drift.declare(Settings())
    m.declare_outputs([Settings().kafka.dlq_topic, Settings().kafka.predictions_topic])
    m.build_info.info({"version": "0.0.0-test"})
    m.model_info.info({"strategy": "replay", "device": "cpu"})
    m.consumer_lag.labels("0").set(120)
    m.consumer_lag.labels("1").set(40)
    m.rolling_accuracy.set(0.9)
    m.prequential_accuracy.set(0.88)
    m.checkpoint_last_success.set(1.7e9)
    m.ready.set(1)
    series = []
    for family in m.registry.collect():
        for s in family.samples:
            labels = {"job": "stream-learner", "instance": instance, **s.labels}
            selector = s.name + "{" + ", ".join(f"{k}={json.dumps(v)}"
                                                for k, v in sorted(labels.items())) + "}"
            rising = family.type == "counter" and s.name.endswith("_total") and (
                "events" in s.name and "rejected" not in s.name)
            values = (f"{s.value:g}+{50 * step_s}x{samples - 1}" if rising
                      else f"{s.value:g}x{samples - 1}")
            series.append({"series": selector, "values": values})
    return series


@pytest.mark.parametrize("samples", [3, 13], ids=["10s", "60s"])
def test_bool_form_returns_one_sample_per_healthy_daemon(tmp_path: Path, samples: int) -> None:
    """5 s scrapes: 3 samples (10 s) is the least any range function needs."""
    step_s = 5
    series = (healthy_daemon_series("a:9108", samples, step_s)
              + healthy_daemon_series("b:9108", samples, step_s))
    names = {s["series"].split("{")[0] for s in series}
    if "process_start_time_seconds" not in names:   # see PROCESS_SERIES
        for inst in ("a:9108", "b:9108"):
            series.append({"series": f'process_start_time_seconds{{job="stream-learner", '
                                     f'instance="{inst}"}}', "values": f"1.7e9x{samples - 1}"})
    for inst in ("a:9108", "b:9108"):   # what Prometheus adds per scrape
        series.append({"series": f'up{{job="stream-learner", instance="{inst}"}}',
                       "values": f"1x{samples - 1}"})
    eval_time = f"{(samples - 1) * step_s}s"
    rules = alert_rules()
    cases = [{"expr": f"count({with_bool(rule['expr'])})", "eval_time": eval_time,
              "exp_samples": [{"labels": "{}", "value": 2}]} for rule in rules.values()]
    doc = {"rule_files": [], "evaluation_interval": f"{step_s}s",
           "tests": [{"interval": f"{step_s}s", "input_series": series,
                      "promql_expr_test": cases}]}
    path = tmp_path / "bool.test.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False, width=1000))
    res = run_promtool("test", "rules", str(path))
    assert res.returncode == 0, ("some alert expression, in its bool form, does not return "
                                 "one sample per daemon:\n" + res.stdout + res.stderr)
