"""Lints the provisioned Grafana dashboard and its provisioning files.

The rules follow grafana/dashboard-linter (one test per rule, named after it) plus ours:
the rows the issue asks for, units that fit the metric, a layout without overlaps, and only
metric names the daemon really exports. PromQL is checked by a small lexer here and, where
promtool is installed (``./dev setup``), by Prometheus' own parser.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from stream_learner.config import Settings
from stream_learner.metrics import Metrics

from conftest import PROMETHEUS, require_tool

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "grafana" / "dashboards" / "stream-learner.json"
PROVIDER = ROOT / "grafana" / "provisioning" / "dashboards" / "stream-learner.yaml"
DATASOURCE = ROOT / "grafana" / "provisioning" / "datasources" / "prometheus.yaml"
# Where the compose file mounts grafana/dashboards/ and grafana/provisioning/.
DASHBOARDS_MOUNT = "/var/lib/grafana/dashboards"
PROVISIONING_MOUNT = "/etc/grafana/provisioning"

DS = {"type": "prometheus", "uid": "${datasource}"}
RATE_INTERVAL = "[$__rate_interval]"

# The rows, in order, and the series each must chart.
ROWS: dict[str, set[str]] = {
    "Stream": {"stream_learner_events_consumed_total", "stream_learner_events_learned_total",
               "stream_learner_events_rejected_total",
               "stream_learner_event_to_update_seconds_bucket",
               "stream_learner_update_duration_seconds_bucket"},
    "Learning": {"stream_learner_prequential_accuracy", "stream_learner_rolling_accuracy",
                 "stream_learner_loss", "stream_learner_model_classes",
                 "stream_learner_step_size_events"},
    "Drift": {"stream_learner_drift_detected_total", "stream_learner_drift_warnings_total",
              "stream_learner_drift_adaptations_total", "stream_learner_accuracy_before_drift",
              "stream_learner_accuracy_since_drift", "stream_learner_concept_id"},
    "Forgetting and replay": {"stream_learner_forgetting", "stream_learner_backward_transfer",
                              "stream_learner_probe_accuracy",
                              "stream_learner_replay_buffer_events",
                              "stream_learner_events_held_out_total"},
    "Kafka and checkpoints": {"stream_learner_consumer_lag",
                              "stream_learner_checkpoint_last_success_timestamp_seconds",
                              "stream_learner_checkpoint_duration_seconds_bucket",
                              "stream_learner_kafka_errors_total", "stream_learner_ready"},
    "Labels": {"stream_learner_served_accuracy", "stream_learner_label_joins_total",
               "stream_learner_label_evictions_total",
               "stream_learner_label_delay_seconds_bucket",
               "stream_learner_label_delay_events_bucket", "stream_learner_pending_labels"},
    "Federation": {"stream_learner_federation_rounds_total", "stream_learner_federation_peers",
                   "stream_learner_federation_updates_rejected_total",
                   "stream_learner_federation_sent_bytes_total",
                   "stream_learner_federation_received_bytes_total",
                   "stream_learner_federation_model_distance",
                   "stream_learner_federation_aggregation_duration_seconds_bucket"},
    "Resources": {"process_cpu_seconds_total", "stream_learner_worker_process_cpu_seconds_total",
                  "process_resident_memory_bytes",
                  "stream_learner_worker_process_resident_memory_bytes",
                  "stream_learner_gpu_memory_allocated_bytes",
                  "stream_learner_gpu_memory_reserved_bytes"},
}

# Grafana unit ids we may use (a subset of grafana-data's valueFormats/categories.ts, the
# list dashboard-linter checks against); "none" is left out on purpose: prefer "short".
UNITS = {"short", "percent", "percentunit", "s", "ms", "µs", "ns", "dtdurations", "bytes",
         "decbytes", "Bps", "binBps", "ops", "reqps", "rps", "wps", "cps", "dateTimeAsIso",
         "dateTimeFromNow", "bool", "bool_yes_no", "bool_on_off"}
PANEL_TYPES = {"timeseries", "stat"}

AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count",
                "count_values", "bottomk", "topk", "quantile"}
FUNCTIONS = AGGREGATIONS | {
    "abs", "absent", "absent_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min",
    "day_of_month", "day_of_week", "day_of_year", "days_in_month", "delta", "deriv", "exp",
    "floor", "histogram_quantile", "holt_winters", "hour", "idelta", "increase", "irate",
    "label_join", "label_replace", "ln", "log2", "log10", "minute", "month", "predict_linear",
    "rate", "resets", "round", "scalar", "sgn", "sort", "sort_desc", "sqrt", "time",
    "timestamp", "vector", "year", "avg_over_time", "min_over_time", "max_over_time",
    "sum_over_time", "count_over_time", "quantile_over_time", "stddev_over_time",
    "stdvar_over_time", "last_over_time", "present_over_time"}
LABEL_LISTS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}
COUNTER_SUFFIXES = ("_total", "_bucket", "_sum", "_count")


# --- walking the dashboard --------------------------------------------------------------

def panels(dash: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included; a collapsed row keeps its panels in its own ``panels``."""
    for p in dash.get("panels", []):
        yield p
        yield from p.get("panels", [])


def charts(dash: dict[str, Any]) -> Iterator[dict[str, Any]]:
    return (p for p in panels(dash) if p["type"] != "row")


def rows(dash: dict[str, Any]) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Each row with its panels: nested when collapsed, else those that follow it."""
    out: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    for p in dash["panels"]:
        if p["type"] == "row":
            out.append((p, list(p.get("panels", []))))
        else:
            assert out, f"panel {p['title']!r} sits above the first row"
            out[-1][1].append(p)
    return out


def annotation_queries(dash: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for a in dash["annotations"]["list"] if not a.get("builtIn")]


def annotation_expr(a: dict[str, Any]) -> str:
    return str(a.get("expr") or a.get("target", {}).get("expr", ""))


def targets(dash: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], str]]:
    """(where, query, expr) for panel targets and annotation queries: both hit Prometheus."""
    for p in charts(dash):
        for t in p.get("targets", []):
            yield p["title"], t, t.get("expr", "")
    for a in annotation_queries(dash):
        yield f"annotation {a['name']}", a, annotation_expr(a)


# --- a small PromQL lexer ---------------------------------------------------------------

_TOKEN = re.compile(r'''
    (?P<string>"(?:\\.|[^"\\])*")
  | (?P<matchers>\{[^{}]*\})
  | (?P<range>\[[^\[\]]*\])
  | (?P<number>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)
  | (?P<ident>[a-zA-Z_:][\w:]*)
  | (?P<open>\()
  | (?P<close>\))
  | (?P<op>==|!=|>=|<=|[-+*/%^<>,])
  | (?P<space>\s+)
  | (?P<bad>.)
''', re.X)
_MATCHER = re.compile(r'\s*([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"((?:\\.|[^"\\])*)"\s*(?:,|$)')


@dataclass
class Selector:
    metric: str
    matchers: dict[str, tuple[str, str]]  # label -> (operator, value)
    range: str | None                     # "[...]" right after it
    func: str | None                      # the call it is the direct argument of


@dataclass
class Query:
    selectors: list[Selector] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    ranges: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def parse_matchers(text: str, errors: list[str]) -> dict[str, tuple[str, str]]:
    inner = text[1:-1]
    found = {m[1]: (m[2], m[3]) for m in _MATCHER.finditer(inner)}
    if _MATCHER.sub("", inner).strip():
        errors.append(f"bad label matchers {text}")
    return found


@cache
def lex(expr: str) -> Query:
    toks = [(m.lastgroup or "", m.group()) for m in _TOKEN.finditer(expr)
            if m.lastgroup != "space"]
    toks.append(("end", ""))
    q = Query()
    stack: list[str | None] = []  # open parentheses: the function they call, if any
    i = 0
    while toks[i][0] != "end":
        kind, text = toks[i]
        nxt = toks[i + 1][0]
        if kind == "bad":
            q.errors.append(f"unexpected {text!r}")
        elif kind == "range":
            q.ranges.append(text)
        elif kind == "open":
            stack.append(None)
        elif kind == "close":
            if not stack:
                q.errors.append("unbalanced ')'")
            else:
                stack.pop()
        elif kind == "ident" and text in LABEL_LISTS:
            if nxt == "open":  # by (le): label names, not metrics
                while toks[i][0] not in ("close", "end"):
                    i += 1
        elif kind == "ident" and text in KEYWORDS:
            pass
        elif kind == "ident" and (nxt == "open" or text in AGGREGATIONS):
            q.calls.append(text)
            if text not in FUNCTIONS:
                q.errors.append(f"unknown function {text}")
            if nxt == "open":
                stack.append(text)
                i += 1
        elif kind in ("ident", "matchers"):
            metric = text if kind == "ident" else ""
            func = stack[-1] if toks[i - 1][0] == "open" else None
            matchers: dict[str, tuple[str, str]] = {}
            if kind == "matchers":
                matchers = parse_matchers(text, q.errors)
            elif nxt == "matchers":
                i += 1
                matchers = parse_matchers(toks[i][1], q.errors)
            rng = None
            if toks[i + 1][0] == "range":
                i += 1
                rng = toks[i][1]
                q.ranges.append(rng)
            q.selectors.append(Selector(metric, matchers, rng, func))
        i += 1
    if stack:
        q.errors.append("unbalanced '('")
    return q


# --- fixtures and helpers ---------------------------------------------------------------

@pytest.fixture(scope="module")
def dash() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


@pytest.fixture(scope="module")
def provider() -> dict[str, Any]:
    return yaml.safe_load(PROVIDER.read_text())


@pytest.fixture(scope="module")
def datasource() -> dict[str, Any]:
    return yaml.safe_load(DATASOURCE.read_text())


def variable(dash: dict[str, Any], name: str) -> dict[str, Any]:
    found = [v for v in dash["templating"]["list"] if v["name"] == name]
    assert len(found) == 1, f"want exactly one ${name} variable"
    return found[0]


def unit(p: dict[str, Any]) -> str:
    return str(p.get("fieldConfig", {}).get("defaults", {}).get("unit", ""))


@cache
def exported() -> frozenset[str]:
    """Names on the wire: a counter family gains _total, a histogram _bucket/_sum/_count.

    Declares what the daemon only declares with a worker process or a CUDA model, too.
    """
    m = Metrics()
    m.drift.declare(Settings())
    m.declare_worker(os.getpid)  # a live pid, or the collector yields nothing
    m.declare_gpu()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                "summary": ("", "_sum", "_count"), "info": ("_info",)}
    names: set[str] = set()
    for fam in m.registry.collect():
        names |= {fam.name + s for s in suffixes.get(fam.type, ("",))}
        names |= {s.name for s in fam.samples}
    return frozenset(names)


# --- dashboard-linter rules -------------------------------------------------------------

def test_template_datasource_rule(dash: dict[str, Any]) -> None:
    ds = [v for v in dash["templating"]["list"] if v["type"] == "datasource"]
    assert len(ds) == 1
    assert ds[0]["name"] == "datasource" and ds[0]["label"] == "Data source"
    assert ds[0]["query"] == "prometheus"


@pytest.mark.parametrize("name", ["job", "instance"])
def test_template_job_and_instance_rules(dash: dict[str, Any], name: str) -> None:
    v = variable(dash, name)
    assert v["type"] == "query"
    assert v["datasource"] == DS
    assert v["label"] == name.title()
    assert v["multi"] is True and v["includeAll"] is True
    assert v["allValue"] == ".+"


def test_template_on_time_change_reload_rule(dash: dict[str, Any]) -> None:
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            assert v["refresh"] == 2, f"${v['name']} must refresh on time range change"


def test_template_label_promql_rule(dash: dict[str, Any]) -> None:
    assert variable(dash, "job")["query"] == "label_values(stream_learner_build_info, job)"
    assert variable(dash, "instance")["query"] == (
        'label_values(stream_learner_build_info{job=~"$job"}, instance)')
    names = exported()
    for v in dash["templating"]["list"]:
        if v["type"] != "query":
            continue
        m = re.fullmatch(r"label_values\((.+),\s*([a-zA-Z_]\w*)\)", v["query"])
        assert m, f"${v['name']}: {v['query']!r} is not label_values(selector, label)"
        q = lex(m[1])
        assert not q.errors and not q.calls and len(q.selectors) == 1, (v["name"], q.errors)
        assert q.selectors[0].metric in names


def test_panel_datasource_rule(dash: dict[str, Any]) -> None:
    for p in charts(dash):
        assert p.get("datasource") == DS, p["title"]
    for where, t, _ in targets(dash):
        assert t.get("datasource") == DS, where


def test_panel_title_description_rule(dash: dict[str, Any]) -> None:
    for p in panels(dash):
        assert p.get("title", "").strip(), f"panel {p['id']} has no title"
    for p in charts(dash):
        assert p.get("description", "").strip(), f"{p['title']!r} has no description"


def test_panel_units_rule(dash: dict[str, Any]) -> None:
    for p in charts(dash):
        assert unit(p) in UNITS, f"{p['title']!r}: unit {unit(p)!r}"
        overrides = p.get("fieldConfig", {}).get("overrides", [])
        for prop in (x for o in overrides for x in o.get("properties", [])):
            assert prop["id"] != "unit" or prop["value"] in UNITS, p["title"]


def test_panel_no_targets_rule(dash: dict[str, Any]) -> None:
    for p in charts(dash):
        assert p.get("targets"), f"{p['title']!r} has no targets"
        for t in p["targets"]:
            assert t.get("expr", "").strip() and t.get("refId"), p["title"]
        ref_ids = [t["refId"] for t in p["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), p["title"]


def test_target_job_and_instance_rules(dash: dict[str, Any]) -> None:
    for where, _, expr in targets(dash):
        for s in lex(expr).selectors:
            assert s.matchers.get("job") == ("=~", "$job"), f"{where}: {s.metric} needs job"
            assert s.matchers.get("instance") == ("=~", "$instance"), (
                f"{where}: {s.metric} needs instance")


def test_target_rate_interval_rule(dash: dict[str, Any]) -> None:
    for where, _, expr in targets(dash):
        q = lex(expr)
        assert all(r == RATE_INTERVAL for r in q.ranges), f"{where}: {expr}"
        for s in q.selectors:
            assert (s.range is None) == (s.func not in ("rate", "irate", "increase")), (
                f"{where}: {s.metric} ranges only inside rate/irate/increase")


def test_target_counter_agg_rule(dash: dict[str, Any]) -> None:
    """Counters and histogram series only inside rate/increase: raw they reset on restart."""
    for where, _, expr in targets(dash):
        for s in lex(expr).selectors:
            if s.metric.endswith(COUNTER_SUFFIXES):
                assert s.func in ("rate", "irate", "increase") and s.range, (
                    f"{where}: {s.metric} outside rate()/increase()")


def test_target_promql_rule(dash: dict[str, Any]) -> None:
    for where, _, expr in targets(dash):
        q = lex(expr)
        assert not q.errors, f"{where}: {expr}: {q.errors}"
        assert q.selectors, f"{where}: {expr} selects nothing"


def test_target_promql_rule_promtool(dash: dict[str, Any], tmp_path: Path) -> None:
    """Prometheus' own parser, fed the queries as Grafana would send them."""
    exprs = [e for _, _, e in targets(dash)]
    rules = [{"record": f"dashboard:query_{i}",
              "expr": e.replace("$__rate_interval", "1m").replace("$job", ".*")
                       .replace("$instance", ".*")}
             for i, e in enumerate(exprs)]
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run([require_tool("promtool", PROMETHEUS), "check", "rules", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


# --- our rules ---------------------------------------------------------------------------

def test_dashboard_metadata(dash: dict[str, Any]) -> None:
    assert dash["uid"] == "stream-learner"
    assert dash["title"].strip()
    assert dash["schemaVersion"] >= 36  # datasource refs as {type, uid}
    assert "stream-learner" in dash["tags"]
    assert dash["refresh"] == "30s"
    assert dash["time"] == {"from": "now-1h", "to": "now"}
    assert "id" not in dash or dash["id"] is None  # provisioning assigns it


def test_rows_in_order_with_their_series(dash: dict[str, Any]) -> None:
    found = rows(dash)
    assert [r["title"] for r, _ in found] == list(ROWS)
    for row, children in found:
        used = {s.metric for p in children for t in p["targets"]
                for s in lex(t["expr"]).selectors}
        assert ROWS[row["title"]] <= used, (row["title"], ROWS[row["title"]] - used)


def test_panel_types(dash: dict[str, Any]) -> None:
    for p in charts(dash):
        assert p["type"] in PANEL_TYPES, p["title"]


def test_unique_panel_ids(dash: dict[str, Any]) -> None:
    ids = [p["id"] for p in panels(dash)]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})
    assert all(isinstance(i, int) for i in ids)


def test_layout_without_overlaps(dash: dict[str, Any]) -> None:
    def overlap(a: dict[str, int], b: dict[str, int]) -> bool:
        return (a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"]
                and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"])

    # A collapsed row's panels only show once it is expanded, below it: check them apart.
    groups = [dash["panels"]] + [r["panels"] for r, _ in rows(dash) if r.get("collapsed")]
    for group in groups:
        boxes = [p["gridPos"] for p in group]
        for i, a in enumerate(boxes):
            assert a["x"] >= 0 and a["w"] > 0 and a["x"] + a["w"] <= 24 and a["h"] > 0
            for b in boxes[i + 1:]:
                assert not overlap(a, b), (a, b)
        # Grafana sorts panels by position: keep the file in the order it shows.
        assert [(b["y"], b["x"]) for b in boxes] == sorted((b["y"], b["x"]) for b in boxes)
    for row, children in rows(dash):
        assert row["gridPos"]["w"] == 24 and row["gridPos"]["h"] == 1
        assert all(c["gridPos"]["y"] > row["gridPos"]["y"] for c in children), row["title"]


def expected_unit(expr: str) -> str | None:
    """The unit a query's result is in, where its metric names tell."""
    q = lex(expr)
    metrics = {s.metric for s in q.selectors}
    if "histogram_quantile" in q.calls and all(m.endswith("_events_bucket") for m in metrics):
        return "short"      # a histogram of counts (stream_learner_label_delay_events)
    if "histogram_quantile" in q.calls or "time" in q.calls:
        return "s"
    if any("accuracy" in m for m in metrics):
        return "percentunit"
    if all(m.endswith("_bytes_total") for m in metrics) and "rate" in q.calls:
        return "Bps"
    if all(m.endswith("_bytes") for m in metrics):
        return "bytes"
    if all(m.endswith("_total") and "_seconds_" not in m and "bytes" not in m
           for m in metrics) and "rate" in q.calls:
        return "ops"
    return None


def test_units_fit_the_series(dash: dict[str, Any]) -> None:
    for p in charts(dash):
        for t in p["targets"]:
            want = expected_unit(t["expr"])
            assert want in (None, unit(p)), f"{p['title']!r}: {t['expr']} wants {want}"
        if unit(p) == "percentunit" and "ccuracy" in p["title"]:
            defaults = p["fieldConfig"]["defaults"]
            assert (defaults.get("min"), defaults.get("max")) == (0, 1), p["title"]


def test_histograms_as_quantiles(dash: dict[str, Any]) -> None:
    quantile = re.compile(r"histogram_quantile\(0\.\d+, sum by \((?:\w+, )*le\) "
                          r"\(rate\(\w+_bucket\{[^}]*\}\[\$__rate_interval\]\)\)\)")
    for where, _, expr in targets(dash):
        if "_bucket" in expr:
            assert quantile.fullmatch(expr), f"{where}: {expr}"


def test_metric_names_are_exported(dash: dict[str, Any]) -> None:
    names = exported()
    for where, _, expr in targets(dash):
        for s in lex(expr).selectors:
            assert s.metric in names, f"{where}: {s.metric!r} is not exported"


def test_gpu_panel_says_when_it_is_empty(dash: dict[str, Any]) -> None:
    gpu = [p for p in charts(dash) if any("_gpu_" in t["expr"] for t in p["targets"])]
    assert gpu
    for p in gpu:
        assert "only when the model runs on CUDA" in p["description"], p["title"]


def test_annotations(dash: dict[str, Any]) -> None:
    builtin = [a for a in dash["annotations"]["list"] if a.get("builtIn")]
    assert len(builtin) == 1 and builtin[0]["type"] == "dashboard"
    drift = [a for a in annotation_queries(dash)
             if "stream_learner_drift_detected_total" in annotation_expr(a)]
    assert len(drift) == 1
    assert drift[0]["datasource"] == DS and drift[0]["enable"]
    q = lex(annotation_expr(drift[0]))
    assert "increase" in q.calls and annotation_expr(drift[0]).rstrip().endswith("> 0")


# --- provisioning --------------------------------------------------------------------------

def test_datasource_provisioning(datasource: dict[str, Any], dash: dict[str, Any]) -> None:
    assert datasource["apiVersion"] == 1
    (ds,) = datasource["datasources"]
    assert ds["type"] == "prometheus" == variable(dash, "datasource")["query"]
    assert ds["uid"] == "prometheus" and ds["url"] == "http://prometheus:9090"
    assert ds["isDefault"] is True
    assert ds["jsonData"]["timeInterval"] == "15s"
    # The dashboard opens on the provisioned data source.
    assert variable(dash, "datasource")["current"]["value"] == ds["uid"]


def test_dashboard_provisioning(provider: dict[str, Any]) -> None:
    assert provider["apiVersion"] == 1
    (p,) = provider["providers"]
    assert p["type"] == "file" and p["folder"] == "stream-learner"
    assert p["allowUiUpdates"] is False
    assert p["options"]["path"] == DASHBOARDS_MOUNT
    assert DASHBOARD.parent.name == "dashboards" and DASHBOARD.suffix == ".json"
    # Grafana reads provisioning/<kind>/*.yaml: the files must sit where the mount puts them.
    assert PROVIDER.parent.parent == DATASOURCE.parent.parent == ROOT / "grafana/provisioning"


def compose_volumes() -> list[tuple[str, str]]:
    """(source, target) of every volume in the deploy compose files."""
    found: list[tuple[str, str]] = []
    for path in sorted(ROOT.glob("deploy/**/*compose*.y*ml")):
        for svc in (yaml.safe_load(path.read_text()) or {}).get("services", {}).values():
            for v in svc.get("volumes", []):
                if isinstance(v, dict):
                    found.append((str(v.get("source", "")), str(v.get("target", ""))))
                else:
                    src, _, rest = str(v).partition(":")
                    found.append((src, rest.split(":")[0]))
    return found


def test_compose_mounts_match_provisioning() -> None:
    targets = {"dashboards": DASHBOARDS_MOUNT, "provisioning": PROVISIONING_MOUNT}
    mounts = [(src.rstrip("/").split("grafana/", 1)[1], dst.rstrip("/"))
              for src, dst in compose_volumes() if "grafana/" in src]
    assert mounts, "deploy/container/compose.yaml mounts nothing of grafana/"
    for rel, dst in mounts:  # grafana/provisioning/datasources may be mounted on its own
        top, _, rest = rel.partition("/")
        assert dst == "/".join(filter(None, [targets[top], rest])), (rel, dst)
    assert {rel.partition("/")[0] for rel, _ in mounts} == set(targets)


def test_scrape_interval_matches_time_interval(datasource: dict[str, Any]) -> None:
    intervals = [cfg["global"]["scrape_interval"]
                 for path in sorted(ROOT.glob("deploy/**/prometheus*.y*ml"))
                 if isinstance(cfg := yaml.safe_load(path.read_text()), dict)
                 and "scrape_interval" in cfg.get("global", {})]
    assert intervals, "no Prometheus config under deploy/ sets a global scrape_interval"
    want = datasource["datasources"][0]["jsonData"]["timeInterval"]
    assert set(intervals) == {want}
