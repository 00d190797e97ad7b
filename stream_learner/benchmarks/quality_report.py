"""``bench quality``'s JSON as a markdown section (for docs/benchmarks.md): every figure
rendered from the results dict, none typed."""

from __future__ import annotations

from typing import Any

from .delay_report import pm

REGIME_TITLES = {"live": "live", "backlog": "backlog, clears in time",
                 "backlog_too_large": "backlog too large", "full_rate": "full rate"}
RIVER_TITLES = {"arf": "river ARF", "hat": "river HAT", "logreg": "river LogReg"}


def render_markdown(result: dict[str, Any]) -> str:
    """The stream x regime x contender table and the bars of one ``bench quality`` run."""
    from .render import provenance

    cfg = result["config"]
    keys = [k for k in ("live", "backlog", "backlog_too_large", "full_rate", "arf", "hat",
                        "logreg") if any(k in e for e in result["summary"])]
    titles = {**REGIME_TITLES, **RIVER_TITLES}
    lines = [provenance(result, f"{cfg['seeds']} (stream seed {cfg['stream_seed']} + k, "
                                f"river seed {cfg['river_seed']} + k)",
                        f"{cfg['n']:,} events per synthetic stream (a drift every "
                        f"{cfg['drift_every']:,}), real streams whole; live at "
                        f"{cfg['live_rate']:,.0f} events/s offered"),
             "",
             "Accuracy (the daemon: its prequential accuracy over every event; river: "
             "test-then-train per event), mean ± sd over the seeds:",
             "",
             "| stream | events | " + " | ".join(f"ours, {titles[k]}" if k in REGIME_TITLES
                                                 else titles[k] for k in keys) + " |",
             "|---|---:|" + "---:|" * len(keys)]
    for e in result["summary"]:
        lines.append(f"| {e['stream']} | {e['events']:,} | "
                     + " | ".join(pm(e[k]["accuracy"]) if k in e else "-" for k in keys)
                     + " |")
    lines += ["", "Events/s (the daemon: first records handed to it to the last event "
                  "learned; river: its learning pass):", "",
              "| stream | " + " | ".join(f"ours, {titles[k]}" if k in REGIME_TITLES
                                        else titles[k] for k in keys) + " |",
              "|---|" + "---:|" * len(keys)]
    for e in result["summary"]:
        lines.append(f"| {e['stream']} | "
                     + " | ".join(pm(e[k]["rate"], ",.0f") if k in e else "-" for k in keys)
                     + " |")
    lines += ["", "Backlog too large (streams of at least twice `model.warmup_events`): "
                  "`model.catch_up_seconds` set to half the seconds the same seed's in-time "
                  "backlog took; seconds to clear it, and at the full rate, over "
                  "catch_up_seconds, and the step size the pacer ended at:", "",
              "| stream | catch_up_seconds | cleared in / catch_up_seconds "
              "| full rate / catch_up_seconds | final step per seed |",
              "|---|---:|---:|---:|---|"]
    for e in result["summary"]:
        if "clear_ratio" in e:
            lines.append(f"| {e['stream']} | {pm(e['catch_up_seconds'], '.2f')} "
                         f"| {pm(e['clear_ratio'], '.2f')} "
                         f"| {pm(e['full_rate_ratio'], '.2f')} "
                         f"| {', '.join(str(s) for s in e['final_steps'])} |")
    lines += ["", "| bar | ours | reference | verdict |", "|---|---|---|---|"]
    for b in result["bars"]:
        if b["kind"] == "clear":
            ours = "-" if b["worst_ratio"] is None else f"worst {b['worst_ratio']:.2f}x"
            ref = f"{b['runs']} run(s)"
        else:
            ours, ref = pm(b["ours"]), pm(b["reference"])
        lines.append(f"| {b['name']} | {ours} | {ref} | {b['verdict']} |")
    scored = [b for b in result["bars"] if b["passed"] is not None]
    passed = sum(1 for b in scored if b["passed"])
    lines += ["", f"{passed} of {len(scored)} scored bars pass. Verdicts: "
                  f"{result.get('spread_rule', '')}."]
    return "\n".join(lines) + "\n"
