"""``bench tuning``'s JSON as a markdown section (for docs/benchmarks.md): every figure
rendered from the results dict, none typed."""

from __future__ import annotations

from typing import Any

from .delay_report import pm

RIVER_TITLES = {"arf": "river ARF", "hat": "river HAT", "logreg": "river LogReg"}


def candidate_title(name: str, model: dict[str, Any]) -> str:
    """``defaults`` or the settings a candidate changes, e.g. ``lr 0.01, 1 pass``."""
    if not model:
        return name
    parts = [f"lr {model['lr']:g}" if "lr" in model else "",
             (f"{model['warmup_passes']} pass" + ("es" if model["warmup_passes"] > 1 else ""))
             if "warmup_passes" in model else "",
             f"predict_block {model['predict_block']}" if "predict_block" in model else ""]
    return ", ".join(p for p in parts if p)


def render_markdown(result: dict[str, Any]) -> str:
    """Stream x candidate (and river) accuracy, the per-candidate means and the bar."""
    from .render import provenance

    cfg, summary = result["config"], result["summary"]
    cands = list(cfg["candidates"])
    titles = [candidate_title(c, result["candidates"][c]) for c in cands]
    river = [m for m in RIVER_TITLES if all("river" in e for e in summary["streams"])]
    first = result["runs"][0]["ours"][cands[0]] if result["runs"] else {}
    lines = [provenance(result, f"{cfg['seeds']} (stream seed {cfg['stream_seed']} + k, "
                                f"model seed k, river seed {cfg['river_seed']} + k)",
                        f"micro-batches of {cfg['micro_batch']}, step size "
                        f"{first.get('step_size', '?')}; events per stream below"),
             "",
             "Prequential accuracy, mean ± sd over the seeds (defaults: lr "
             f"{first.get('lr', '?'):g}, {first.get('warmup_passes', '?')} warm-up passes, "
             f"predict_block {first.get('predict_block', '?')}):"
             if cands[0] == "defaults" and first else "Prequential accuracy, mean ± sd:",
             "",
             "| stream | events | " + " | ".join(titles + [RIVER_TITLES[m] for m in river])
             + " |", "|---|---:|" + "---:|" * (len(cands) + len(river))]
    for e in summary["streams"]:
        cells = [pm(e["ours"][c]) for c in cands] + [pm(e["river"][m]) for m in river]
        lines.append(f"| {e['stream']} | {e['events']:,} | " + " | ".join(cells) + " |")
    overall = summary["candidates"]
    lines.append("| **mean over the streams** | | " + " | ".join(
        f"**{overall[c]['mean_accuracy']:.4f}**" for c in cands) + " |" + " |" * len(river))
    lines.append("| mean rank (1 = best) | | " + " | ".join(
        f"{overall[c]['mean_rank']:.2f}" for c in cands) + " |" + " |" * len(river))
    lines += ["", "Streams: " + "; ".join(f"`{k}`: {v}" for k, v in result["streams"].items())
              + ".", "", "| bar | defaults | best candidate | verdict |", "|---|---|---|---|"]
    for b in result["bars"]:
        best = candidate_title(b["best_other"], result["candidates"][b["best_other"]])
        lines.append(f"| {b['name']} | {b['ours']:.4f} | {best}: {b['best']:.4f} "
                     f"| {b['verdict']} |")
    return "\n".join(lines) + "\n"
