"""Seed statistics and bars of ``stream-learner bench drift`` (from its results dict).

Every bar compares figures measured in the same run; each stats-based bar carries a
``verdict`` by :data:`~.drift_metrics.SPREAD_RULE` and ``passed`` (the verdict is
``pass``).  No published or hard-coded figure enters a bar.
"""

from __future__ import annotations

from typing import Any

from .drift_metrics import REFERENCE, combine, holds, stats, verdict

BAR_COST = 0.9                   # events/s with adaptation >= this x with no drift handling
DET_METRICS = ("mean_delay", "missed", "false_alarms_per_100k")   # all lower-is-better


def _rows(results: dict[str, Any], stream: str, config: str) -> list[dict[str, Any]]:
    pool = results["reference"] if config == REFERENCE else results["runs"]
    return sorted((r for r in pool if r["stream"] == stream and r["config"] == config),
                  key=lambda r: r["seed"])


def summarise(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Mean ± sd over the seeds per stream and contender (the reference included)."""
    out: list[dict[str, Any]] = []
    configs = list(results["config"]["configs"]) + [REFERENCE]
    for s in results["streams"]:
        for config in configs:
            rows = _rows(results, s["name"], config)
            if not rows:
                continue
            entry: dict[str, Any] = {"stream": s["name"], "config": config,
                                     "seeds": len(rows)}
            if config != REFERENCE:
                for key in ("accuracy", "mean_recovery", "rate"):
                    entry[key] = stats([r[key] for r in rows])
            dets = [r.get("detection") for r in rows]
            entry["detection"] = None if None in dets else {
                m: stats([d["detection"][m] for d in dets]) for m in DET_METRICS + ("detections",)}
            out.append(entry)
    return out


def _get(results: dict[str, Any], stream: str, config: str) -> dict[str, Any] | None:
    return next((e for e in results["summary"] if e["stream"] == stream
                 and e["config"] == config), None)


def _stat_bar(name: str, kind: str, stream: str, ours: dict[str, Any], ref: dict[str, Any],
              higher_is_better: bool = True) -> dict[str, Any]:
    v = verdict(ours, ref, higher_is_better)
    return {"name": name, "kind": kind, "stream": stream, "ours": ours, "reference": ref,
            "verdict": v, "passed": v == "pass"}


def _recurring_bars(results: dict[str, Any], name: str) -> list[dict[str, Any]]:
    rows = _rows(results, name, "adapt")
    if not rows or not rows[0].get("recurring"):
        return []
    window = results["config"]["recovery_events"]
    half = window // 2
    zero = stats([0.0] * len(rows))
    out = []
    for key, label in (("after_return", f"accuracy {window:,} events after a concept returns"),
                       ("after_return_settled", f"accuracy over events {half:,}-{2 * half:,} "
                                                "after a concept returns")):
        # Per seed, the worst return: every return must be as good as before it left.
        worst = stats([min(x[key] - x["before_leaving"] for x in r["recurring"])
                       for r in rows])
        out.append(_stat_bar(f"{name}: {label} >= just before it left (worst return, "
                             "change)", "recurring", name, worst, zero))
    return out


def _detection_bar(name: str, ours: dict[str, Any], ref: dict[str, Any],
                   has_drifts: bool) -> dict[str, Any]:
    metrics = DET_METRICS if has_drifts else ("false_alarms_per_100k",)
    parts = {m: (verdict(ours[m], ref[m], False), holds(ours[m], ref[m], False))
             for m in metrics}
    v = combine(list(parts.values()))
    return {"name": f"{name}: counted detection ({', '.join(metrics)}) with adaptation "
                    "<= river ADWIN on raw errors, per event",
            "kind": "detection", "stream": name,
            "ours": {m: ours[m] for m in metrics}, "reference": {m: ref[m] for m in metrics},
            "components": {m: p[0] for m, p in parts.items()}, "verdict": v,
            "passed": v == "pass"}


def bars(results: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for s in results["streams"]:
        name = s["name"]
        ours = _get(results, name, "adapt")
        if ours is None:
            continue
        # 1. accuracy vs river ARF on the same events in this run, synthetic and real alike.
        arf = _get(results, name, "arf")
        if arf is not None:
            out.append(_stat_bar(f"{name}: accuracy with adaptation >= river ARF",
                                 "accuracy", name, ours["accuracy"], arf["accuracy"]))
        # 2. recovery after abrupt drifts: with adaptation better than without.
        plain = _get(results, name, "no-adapt")
        abrupt = s["drifts"] and all(d["kind"] == "abrupt" for d in s["drifts"])
        if abrupt and plain is not None and ours["mean_recovery"]["mean"] is not None:
            out.append(_stat_bar(f"{name}: recovery after abrupt drifts, adaptation > none",
                                 "recovery", name, ours["mean_recovery"],
                                 plain["mean_recovery"]))
        # 3. recurring: a returning concept is at least as good as when it left.
        out += _recurring_bars(results, name)
        # 4. detection vs river ADWIN defaults on the raw error stream, counted alike.
        ref = _get(results, name, REFERENCE)
        if ref is not None and ours["detection"] is not None:
            out.append(_detection_bar(name, ours["detection"], ref["detection"],
                                      bool(s["drifts"])))
    # 5. cost: over every stream and seed, events/s with adaptation vs no drift handling.
    adapt = [r for r in results["runs"] if r["config"] == "adapt"]
    none = [r for r in results["runs"] if r["config"] == "none"]
    if adapt and none:
        rate_a = sum(r["events"] for r in adapt) / sum(r["learn_seconds"] for r in adapt)
        rate_n = sum(r["events"] for r in none) / sum(r["learn_seconds"] for r in none)
        ok = rate_a >= BAR_COST * rate_n
        out.append({"name": f"all streams: events/s with adaptation >= {BAR_COST:g}x with no "
                            "drift handling", "kind": "cost", "stream": None,
                    "ours": rate_a, "reference": rate_n, "ratio": rate_a / rate_n,
                    "verdict": "pass" if ok else "fail", "passed": ok})
    return out
