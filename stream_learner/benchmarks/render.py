"""Render docs/benchmarks.md's result tables from the committed benchmark JSON.

``python -m stream_learner.benchmarks.render`` reads ``docs/results/NAME.json`` (what
``stream-learner bench NAME --out docs/results/NAME.json`` writes) and rewrites the text
between ``<!-- results:NAME -->`` and ``<!-- /results:NAME -->`` in docs/benchmarks.md,
so no figure on that page is ever typed by hand.  A benchmark without a committed JSON
renders as "no committed run".

Each renderer takes the JSON as a dict and returns markdown; another benchmark plugs in
with one line: ``RENDERERS["delay"] = delay.render_markdown``.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from .delay_report import render_markdown as render_delay
from .quality_report import render_markdown as render_quality
from .tuning_report import render_markdown as render_tuning
from .drift_report import PUBLISHED_LABEL, _bar_values, detection_rows, ms
from .drift_streams import PUBLISHED_ARF

ROOT = Path(__file__).resolve().parent.parent.parent
PAGE = ROOT / "docs" / "benchmarks.md"
RESULTS = ROOT / "docs" / "results"
NO_RUN = "No committed run (`docs/results/{name}.json` is absent)."


# ----------------------------------------------------------------------------- helpers

def _cell(value: Any) -> str:
    # A "|" inside a cell would split the markdown table.
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]],
          right: Sequence[bool] | None = None) -> str:
    """A markdown table; ``right[i]`` right-aligns column i (figures)."""
    right = right if right is not None else [i > 0 for i in range(len(headers))]
    lines = ["| " + " | ".join(_cell(h) for h in headers) + " |",
             "|" + "|".join("---:" if r else "---" for r in right) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def f4(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def rate(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def pass_fail(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def provenance(results: dict[str, Any], seeds: str, sizes: str) -> str:
    """The run's provenance table, from the JSON only (older JSON: "not recorded")."""
    prov = results.get("provenance") or {}
    cfg, m = results.get("config", {}), results.get("machine", {})
    written = prov.get("written_utc") or results.get("created") or "not recorded"
    commit = prov.get("git_commit") or "not recorded"
    if prov.get("git_dirty"):
        commit += " (with uncommitted changes)"
    quick = prov.get("quick", cfg.get("quick"))
    kind = "not recorded" if quick is None else "quick (`--quick`)" if quick else "full"
    threads = f", {m['torch_threads']} torch thread(s)" if m.get("torch_threads") else ""
    machine = (f"{m.get('cpu_count', '?')} CPUs ({m.get('cpu_model') or 'unknown model'}), "
               f"device {m.get('device', '?')}" + (f" ({m['cuda_device']})"
                                                   if m.get("cuda_device") else "") + threads)
    software = (f"{m.get('platform', '?')}; Python {m.get('python', '?')}, torch "
                f"{m.get('torch', '?')}, river {m.get('river', '?')}, numpy "
                f"{m.get('numpy', '?')}")
    rows = [("started (UTC)", prov.get("started_utc") or "not recorded"),
            ("written (UTC)", written), ("git commit", commit), ("run", kind),
            ("seeds", seeds), ("sizes", sizes), ("machine", machine),
            ("software", software)]
    if prov.get("argv"):
        rows.append(("command", "`stream-learner " + " ".join(prov["argv"]) + "`"))
    if results.get("wall_seconds") is not None:
        rows.append(("wall time", f"{results['wall_seconds']:,.0f} s"))
    return table(("provenance", ""), rows, right=(False, False))


# ----------------------------------------------------------------------------- drift

def render_drift(results: dict[str, Any]) -> str:
    c = results["config"]
    configs = list(c["configs"])
    summary = {(e["stream"], e["config"]): e for e in results["summary"]}
    out = [provenance(
        results, seeds=f"{c['seeds']} (stream seed {c['seed']} + k, model seed "
                       f"{c['model_seed']} + k, river seed {c['river_seed']} + k)",
        sizes=f"{c['events']:,} events per synthetic stream, a drift every "
              f"{c['drift_every']:,}; real streams "
              + (f"capped at {c['real_events']:,} events" if c["real_events"] else "whole")
              + f"; micro-batch {c['micro_batch']}; warm-up "
              f"{c['warmup']:,}; recovery window {c['recovery_events']:,}")]
    out.append("Every figure is mean ± sd over the seeds (the mean alone with one seed).")

    def per_stream(title: str, key: str, fmt: str, only_drifts: bool = False,
                   published: bool = False) -> None:
        rows = []
        for s in results["streams"]:
            if only_drifts and not s["drifts"]:
                continue
            cells = [ms(summary[(s["name"], k)][key], fmt) if (s["name"], k) in summary
                     else "-" for k in configs]
            if published:
                v = PUBLISHED_ARF.get(s["name"])
                cells.append("-" if v is None else f"{v:.3f}")
            rows.append([s["name"], *cells])
        out.append(f"**{title}**\n\n" + table(
            ["stream", *configs, *([PUBLISHED_LABEL] if published else [])], rows))

    per_stream("Prequential accuracy", "accuracy", ".4f", published=True)
    per_stream(f"Recovery: mean accuracy over the {c['recovery_events']:,} events after "
               "each drift set in", "mean_recovery", ".4f", only_drifts=True)
    per_stream("Events/s of the learning pass", "rate", ",.0f")
    rows = detection_rows(results, summary)
    out.append(f"**Counted drift detection** ({results['count_rule']}; matched within "
               f"{c['tolerance']:,} events after a drift set in)\n\n" + table(
                   ("stream", "detector", "scored drifts", "counted", "mean delay", "missed",
                    "FA per 100k"), rows, right=(False, False, True, True, True, True, True)))
    rows = [[b["name"], *_bar_values(b), b["verdict"]] for b in results["bars"]]
    out.append(f"**Verdicts** ({results['spread_rule']})\n\n" + table(
        ("bar", "ours", "reference", "verdict"), rows, right=(False, True, True, False)))
    return "\n\n".join(out)


# ----------------------------------------------------------------------------- continual

def render_continual(results: dict[str, Any]) -> str:
    from .continual import our_best, summarise, tuning_rows, tuning_streams_line

    c = results["config"]
    seeds = results.get("seeds") or [c["seed"]]
    out = [provenance(
        results, seeds=f"1 (seed {seeds[0]})" if len(seeds) == 1 else
        f"{len(seeds)} (seeds {', '.join(map(str, seeds))}, each for the data, the model, "
        "replay sampling and Avalanche)",
        sizes=f"{c['tasks']} permuted/rotated tasks, {c['split_tasks']} split tasks, "
              f"{c['sea_tasks']} SEA segments of {c['sea_events']:,} events; micro-batch "
              f"{c['micro_batch']}, step {c['step_size']}, MLP {tuple(c['hidden'])}, lr "
              f"{c['lr']}, memory {c['capacity']} (replay batch {c['replay_batch']})")]
    if len(seeds) > 1:
        out.append("Every figure is mean ± sd over the seeds.")
    tuning = results.get("tuning")
    if tuning:
        out.append(f"**Tuning** ({tuning['criterion']}): {tuning_streams_line(tuning)}; "
                   f"periods tried: {', '.join('off' if p == 0 else str(p) for p in tuning['periods'])}"
                   "\n\n" + table(("configuration", "chosen consolidate_every_events",
                                    "tuning acc", "tuning forgetting",
                                    "mean tuning acc per period"), tuning_rows(tuning),
                                   right=(False, True, True, True, False)))
    summary = results.get("summary") or summarise(results)
    for s in results["streams"]:
        rows = [[e["config"], ms(e["final_accuracy"]), ms(e["forgetting"]),
                 ms(e["prequential_accuracy"]), ms(e["rate"], ",.0f")]
                for e in summary if e["stream"] == s["name"]]
        out.append(f"**{s['name']}**: {s['description']} ({sum(s['train_events']):,} "
                   "training events, single pass)\n\n" + table(
                       ("configuration", "final avg acc", "avg forgetting", "prequential acc",
                        "events/s"), rows))

    def pair(b: dict[str, Any], key: str, old: str) -> str:
        st = b.get("stats", {}).get(key)
        if st:
            return f"{ms(st[0])} vs {ms(st[1])}"
        return f"{f4(b[old][0])} vs {f4(b[old][1])}"

    # Older JSON (one seed, pass/fail bars) has no per-condition verdicts.
    seeded = any("conditions" in b for b in results["bars"])
    rows = [[b["name"], pair(b, "final_accuracy", "accuracy"),
             pair(b, "forgetting", "forgetting"),
             "-" if b["rate_ratio"] is None else f"{b['rate_ratio']:.1f}x",
             *([", ".join(f"{k} {v}" for k, v in b.get("conditions", {}).items()) or "-"]
               if seeded else []),
             b.get("verdict") or pass_fail(b["passed"])] for b in results["bars"]]
    rule = f" ({results['bar_rule']})" if results.get("bar_rule") else ""
    best = f"; 'our best' = {our_best(results)}" + (
        ", picked on the tuning streams" if tuning else "") if results.get("bar_rule") else ""
    out.append(f"**Verdicts**{rule}{best}\n\n" + table(
        ("bar", "accuracy", "forgetting", "rate ratio", *(("conditions",) if seeded else ()),
         "result"), rows, right=(False, True, True, True, *((False,) if seeded else ()),
                                 False)))
    return "\n\n".join(out)


# ----------------------------------------------------------------------------- federation

def _ms_a_round(seconds: float | None) -> str:
    if seconds is None:
        return "not measured (no round)"
    # All of the on-off difference is charged to the rounds; "on" faster is noise.
    return f"{seconds * 1e3:.1f}" if seconds > 0 else "none measurable (on as fast)"


def render_federation(results: dict[str, Any]) -> str:
    c = results["config"]
    out = [provenance(
        results, seeds=f"1 (seed {c['seed']})",
        sizes=f"{c['peers']} sites x {c['events']:,} events at {c['rate']:g}/s, "
              f"{c['classes']} classes in {c['dim']} dimensions, skew {c['skew']}, "
              f"{c['heldout']:,} held-out events; rounds every {c['every_events']} events or "
              f"{c['every_seconds']}s; overhead on a {c['overhead_events']:,}-event backlog x "
              f"{c['overhead_repeats']}")]
    rows = [[name, pct(r["mean_final"]), pct(r["honest_final"]), pct(r["mean_prequential"]),
             " ".join(pct(v) for v in r["final"]),
             f"{sum(r.get('rejected', {}).values()):.0f}"]
            for name, r in results["runs"].items()]
    out.append("**Final accuracy on held-out events of the final concept**\n\n" + table(
        ("configuration", "final (mean)", "honest sites", "prequential", "per site final",
         "rejected updates"), rows))
    ov = results.get("overhead")
    if ov:
        out.append("**Overhead** (one daemon, median over repeats)\n\n" + table(
            ("events/s off", "events/s on", "ratio", "rounds", "ms a round"),
            [[rate(ov["off"]), rate(ov["on"]), f"{ov['ratio']:.2f}",
              ", ".join(f"{v:.0f}" for v in ov["rounds"]),
              _ms_a_round(ov.get("seconds_per_round"))]], right=(True,) * 5))
    rows = [[b["bar"], f"{b['value']:.3f}", f"{b['reference']:.3f}", pass_fail(b["pass"])]
            for b in results["bars"]]
    out.append("**Verdicts**\n\n" + table(("bar", "value", "reference", "result"), rows,
                                           right=(False, True, True, False)))
    return "\n\n".join(out)


# ----------------------------------------------------------------------------- throughput

def render_throughput(results: dict[str, Any]) -> str:
    c = results["config"]
    out = [provenance(
        results, seeds=f"1 (seed {c['seed']})",
        sizes=f"{c['n']:,} {c['stream']} events, {c['partitions']} partitions, batch sizes "
              f"{', '.join(str(b) for b in c['batch_sizes'])}; accuracy on the first "
              f"{c['accuracy_events']:,} events")]
    p, raw = results["produce"], results["raw_consume"]
    rows: list[list[Any]] = [
        [f"produce ({p['processes']} kafka-python producers)", f"{p['events']:,}",
         rate(p["rate"]), "", ""],
        ["raw kafka-python consume (no decode)", f"{raw['events']:,}", rate(raw["rate"]),
         "1.00x", ""]]
    rows += [[f"daemon {r['strategy']} (batch {r['batch_size']})", f"{r['events']:,}",
              rate(r["rate"]), f"{r['ratio_to_raw']:.2f}x", f4(r["accuracy"])]
             for r in results["daemon"]]
    rows += [[f"learner core {r['strategy']} (batch {r['batch_size']}, no Kafka)",
              f"{r['events']:,}", rate(r["rate"]), f"{r['rate'] / raw['rate']:.2f}x",
              f4(r["accuracy"])] for r in results["learner_core"]]
    rows += [[r["model"], f"{r['events']:,}", rate(r["rate"]),
              f"{r['rate'] / raw['rate']:.2f}x", f4(r["accuracy"])]
             for r in results["river"] if r["stream"] == c["stream"]]
    out.append("**Throughput**\n\n" + table(
        ("measurement", "events", "events/s", "vs raw", "accuracy"), rows))
    rows = [[r["stream"], f"{r['events']:,}", f4(r["replay_accuracy"]), f4(r["arf_accuracy"]),
             f4(r["logreg_accuracy"]), f"{r['replay_accuracy'] - r['arf_accuracy']:+.4f}"]
            for r in results["accuracy_comparison"]]
    out.append("**Prequential accuracy on the same first K events**\n\n" + table(
        ("stream", "K events", "replay (ours)", "ARF", "LogReg", "replay - ARF"), rows))
    lat = results["latency"]

    def sec(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}s"
    out.append("**event_to_update_seconds** (replay daemon, producer in a separate "
               "process)\n\n" + table(
                   ("offered/s", "consumed/s", "events", "p50", "p99", "max"),
                   [[rate(lat["offered_rate"]), rate(lat["achieved_consume_rate"]),
                     f"{lat['events']:,}", sec(lat["p50_seconds"]), sec(lat["p99_seconds"]),
                     sec(lat["max_seconds"])]], right=(True,) * 6))

    def shown(b: dict[str, Any]) -> str:
        v, unit = b["value"], b["unit"]
        return (f"{v:,.0f}/s" if unit == "events/s" else f"{v:.2f}x" if unit == "x"
                else f"{v:.4f} vs {b['threshold']:.4f}" if unit == "accuracy"
                else f"{v:.3f}s")
    out.append("**Verdicts**\n\n" + table(
        ("bar", "measured", "result"), [[b["name"], shown(b), pass_fail(b["passed"])]
                                        for b in results["bars"]],
        right=(False, True, False)))
    return "\n\n".join(out)


# ----------------------------------------------------------------------------- the page

RENDERERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "throughput": render_throughput,
    "drift": render_drift,
    "federation": render_federation,
    "continual": render_continual,
    "delay": render_delay,
    "quality": render_quality,
    "tuning": render_tuning,
    "tuning_backlog": render_tuning,     # bench tuning at micro_batch 1024: predict_block
}
"""Benchmark name -> markdown from its JSON; one line here plugs in another benchmark."""


def render_region(name: str, results_dir: Path = RESULTS,
                  renderers: dict[str, Callable[[dict[str, Any]], str]] | None = None) -> str:
    """The markdown for benchmark ``name``: its tables, or "no committed run"."""
    path = results_dir / f"{name}.json"
    if not path.exists():
        return NO_RUN.format(name=name)
    return (renderers or RENDERERS)[name](json.loads(path.read_text()))


def render_page(text: str, results_dir: Path = RESULTS,
                renderers: dict[str, Callable[[dict[str, Any]], str]] | None = None) -> str:
    """``text`` with every registered benchmark's marked region re-rendered.

    A registered benchmark without its markers is an error: its tables would
    otherwise silently never reach the page.
    """
    renderers = RENDERERS if renderers is None else renderers
    for name in renderers:
        pattern = re.compile(rf"(<!-- results:{re.escape(name)} -->\n).*?"
                             rf"(<!-- /results:{re.escape(name)} -->)", re.S)
        if not pattern.search(text):
            raise ValueError(f"docs/benchmarks.md has no results:{name} markers")
        body = render_region(name, results_dir, renderers)
        text = pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text, count=1)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    page = Path(argv[0]) if argv else PAGE
    page.write_text(render_page(page.read_text()))
    print(f"rendered {page}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
