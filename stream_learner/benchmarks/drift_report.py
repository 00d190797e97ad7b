"""The printed tables of ``stream-learner bench drift``: mean ± sd over the seeds."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from .drift_bars import DET_METRICS
from .drift_metrics import REFERENCE
from .drift_streams import PUBLISHED_ARF

PUBLISHED_LABEL = "published ARF (not used for any verdict)"


def ms(s: dict[str, Any] | None, fmt: str = ".4f") -> str:
    """``mean ± sd`` of a stats dict; the mean alone with one seed, ``-`` without data."""
    if s is None or s["mean"] is None:
        return "-"
    sd = "" if s["sd"] is None else f" ± {s['sd']:{fmt.lstrip('+')}}"
    # A mean over fewer seeds than were run (a delay where some seed missed every drift).
    some = f" (n={s['n']})" if s["n"] < len(s["values"]) else ""
    return format(s["mean"], fmt) + sd + some


def _colour(verdict: str) -> str:
    colour = {"pass": "green", "fail": "red"}.get(verdict, "yellow")
    return f"[{colour}]{verdict}[/]"


def _bar_values(bar: dict[str, Any]) -> tuple[str, str]:
    kind, a, b = bar["kind"], bar["ours"], bar["reference"]
    if kind in ("accuracy", "recovery"):
        return ms(a), ms(b)
    if kind == "recurring":
        return ms(a, "+.3f"), ms(b, "+.3f")
    if kind == "detection":
        def d(m: dict[str, Any]) -> str:
            return ", ".join(f"{k.replace('false_alarms_per_100k', 'FA/100k')} {ms(v, '.0f')}"
                             for k, v in m.items())
        return d(a), d(b)
    return f"{a:,.0f} ev/s ({bar['ratio']:.2f}x)", f"{b:,.0f} ev/s"


DETECTORS = {"adapt": "ours, adapt", "no-adapt": "ours, no-adapt",
             REFERENCE: "ADWIN() on no-adapt's raw errors"}


def detection_rows(results: dict[str, Any],
                   summary: dict[tuple[str, str], dict[str, Any]]) -> list[list[str]]:
    """The counted-detection table's rows (stream, detector, scored drifts, counted, mean
    delay, missed, FA per 100k), shared by the printed table and the docs page."""
    warmup = results["config"]["warmup"]
    rows = []
    for s in results["streams"]:
        scored = sum(dr["start"] >= warmup for dr in s["drifts"])
        for k, label in DETECTORS.items():
            e = summary.get((s["name"], k))
            if e is None or e["detection"] is None:
                continue
            det = e["detection"]
            rows.append([s["name"], label, str(scored), ms(det["detections"], ".1f"),
                         ms(det["mean_delay"], ".0f"), ms(det["missed"], ".1f"),
                         ms(det["false_alarms_per_100k"], ".0f")])
    return rows


def print_report(results: dict[str, Any], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    probe = Console()
    console = Console(width=probe.width if probe.is_terminal else 150)
    m, c = results["machine"], results["config"]
    configs = list(c["configs"])
    summary = {(e["stream"], e["config"]): e for e in results["summary"]}
    console.print(f"[bold]stream-learner drift[/] — {m['cpu_count']} CPUs ({m['cpu_model']}), "
                  f"torch {m['torch']} ({m['torch_threads']} threads), river {m['river']}; "
                  f"{c['events']:,} events per synthetic stream, a drift every "
                  f"{c['drift_every']:,}, micro-batch {c['micro_batch']}, single pass; "
                  f"{c['seeds']} seed(s), every figure mean ± sd over them")
    s_table = Table(title="Streams")
    for col in ("stream", "events", "features", "classes", "true drifts", "description"):
        s_table.add_column(col, justify="left" if col in ("stream", "description") else "right")
    for s in results["streams"]:
        kinds = sorted({d["kind"] for d in s["drifts"]})
        s_table.add_row(s["name"], f"{s['events']:,}", str(s["features"]), str(s["classes"]),
                        f"{len(s['drifts'])} {'/'.join(kinds)}".strip(), s["description"])
    console.print(s_table)

    def per_stream(title: str, key: str, fmt: str = ".4f",
                   extra: tuple[tuple[str, Callable[[dict[str, Any]], str]], ...] = (),
                   only_drifts: bool = False) -> None:
        t = Table(title=title)
        t.add_column("stream")
        for k in configs:
            t.add_column(k, justify="right")
        for name, _ in extra:
            t.add_column(name, justify="right")
        for s in results["streams"]:
            if only_drifts and not s["drifts"]:
                continue
            cells = [ms(summary[(s["name"], k)][key], fmt) if (s["name"], k) in summary
                     else "-" for k in configs]
            t.add_row(s["name"], *cells, *[fn(s) for _, fn in extra])
        console.print(t)

    def published(s: dict[str, Any]) -> str:
        v = PUBLISHED_ARF.get(s["name"])
        return "-" if v is None else f"{v:.3f}"

    per_stream("Prequential accuracy", "accuracy", extra=((PUBLISHED_LABEL, published),))
    per_stream(f"Recovery: mean accuracy over the {c['recovery_events']:,} events after each "
               "drift set in", "mean_recovery", only_drifts=True)
    per_stream("Events/s of the learning pass", "rate", ",.0f")
    _detection_table(console, results, summary)

    b = Table(title=f"Bars ({results['spread_rule']})")
    b.add_column("bar")
    b.add_column("ours", justify="right")
    b.add_column("reference", justify="right")
    b.add_column("verdict")
    for bar in results["bars"]:
        a_s, b_s = _bar_values(bar)
        b.add_row(bar["name"], a_s, b_s, _colour(bar["verdict"]))
    console.print(b)
    passed = sum(bar["passed"] for bar in results["bars"])
    console.print(f"{passed}/{len(results['bars'])} bars pass. Detection: {results['count_rule']} "
                  f"(warm-up {c['warmup']:,} events), the same function for ours and the "
                  "reference.")
    console.print(f"wrote {out} ({results['wall_seconds']:.0f}s in all)")


def _detection_table(console: Any, results: dict[str, Any],
                     summary: dict[tuple[str, str], dict[str, Any]]) -> None:
    from rich.table import Table

    c = results["config"]
    d = Table(title=f"Counted drift detection on the error stream, per event (warm-up "
                    f"{c['warmup']:,}; matched within {c['tolerance']:,} events after a drift "
                    "set in, up to the next drift)")
    for col in ("stream", "detector", "scored drifts", "counted", *DET_METRICS):
        d.add_column(col.replace("false_alarms_per_100k", "FA per 100k"),
                     justify="left" if col in ("stream", "detector") else "right")
    for row in detection_rows(results, summary):
        d.add_row(*row)
    console.print(d)
