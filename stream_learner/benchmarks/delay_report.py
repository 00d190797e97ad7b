"""``bench delay``'s JSON as a markdown section (for docs/benchmarks.md): every figure
rendered from the results dict, none typed."""

from __future__ import annotations

from typing import Any


def pm(s: dict[str, Any] | None, fmt: str = ".4f") -> str:
    """A :func:`~.drift_metrics.stats` dict as ``mean ± sd`` (``-`` without data)."""
    if not s or s.get("mean") is None:
        return "-"
    sd = f" ± {s['sd']:{fmt}}" if s.get("sd") is not None else ""
    return f"{s['mean']:{fmt}}{sd}"


def _joins(joins: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in joins.items() if v) or "none"


def render_markdown(result: dict[str, Any]) -> str:
    """The delay table, the throughput pairs and the bars of one ``bench delay`` run."""
    cfg, m = result["config"], result.get("machine", {})
    quick = " (`--quick`)" if cfg.get("quick") else ""
    lines = [
        f"Run{quick} of {result.get('created', '?')}: {result.get('stream', cfg['stream'])}, "
        f"{cfg['n']:,} events per run, {cfg['seeds']} seed(s), mean ± sd over the seeds, "
        f"the daemon's batch.size {result.get('daemon_batch_size') or 'default'}; "
        f"{m.get('cpu_count', '?')} CPUs ({m.get('cpu_model') or 'unknown CPU'}), "
        f"river {m.get('river', '?')}.",
        "",
        "Accuracy on river's basis (events with a prediction; river's "
        "`progressive_val_score` leaves out those its model could not predict) and on every "
        "event (no prediction = a miss):",
        "",
        "| label delay (events) | served (scored) | river ARF delayed (scored) "
        "| served (every event) | daemon's own served (every event) | river ARF (every event) "
        "| events unpredicted: ours / ARF | prequential at label time "
        "| river LogReg delayed (scored) | join outcomes | events/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in result["summary"]:
        delay = e["delay"]
        if delay == "random":
            delay = f"random, uniform 0-{cfg['random_max']:,} (mean {pm(e['mean_delay'], ',.0f')})"
        lines.append(f"| {delay} | {pm(e['served'])} | {pm(e['arf'])} "
                     f"| {pm(e['served_all'])} | {pm(e['daemon_served'])} "
                     f"| {pm(e['arf_all'])} | {pm(e['unpredicted'], ',.0f')} / "
                     f"{pm(e['arf_unpredicted'], ',.0f')} "
                     f"| {pm(e['prequential'])} | {pm(e.get('logreg'))} "
                     f"| {_joins(e['joins'])} | {pm(e['rate'], ',.0f')} |")
    agree = all(e["served_agrees"] for e in result["summary"])
    ids = all(e["ids_match"] for e in result["summary"])
    lines += ["", f"Served accuracy from the records {'equals' if agree else 'DIFFERS FROM'} "
                  f"the daemon's own count in every run; predicted and joined ids "
                  f"{'equal' if ids else 'DIFFER FROM'} the produced ids.", ""]
    if result.get("throughput"):
        lines += [f"Throughput, the same events all inline vs half label-later (labels "
                  f"{cfg['throughput_delay']:,} events later):", "",
                  "| seed | inline events/s | half label-later events/s | ratio |",
                  "|---|---|---|---|"]
        for p in result["throughput"]:
            lines.append(f"| {p['seed']} | {p['inline']['rate']:,.0f} "
                         f"| {p['half_later']['rate']:,.0f} | {p['ratio']:.2f} |")
        lines.append("")
    lines += ["| bar | ours | reference | verdict |", "|---|---|---|---|"]
    for b in result["bars"]:
        if b["kind"] == "throughput":
            ours, ref = f"{b['ours']:,.0f}/s ({b['ratio']:.2f}x)", f"{b['reference']:,.0f}/s"
        else:
            ours, ref = pm(b["ours"]), pm(b["reference"])
        lines.append(f"| {b['name']} | {ours} | {ref} | {b['verdict']} |")
    lines += ["", f"Verdicts: {result.get('spread_rule', '')}."]
    return "\n".join(lines) + "\n"
