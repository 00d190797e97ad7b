"""``stream-learner bench federation``: K daemon processes on one broker, federated.

One drifting stream (Gaussian classes whose centres all move at the halfway point) is
dealt out to ``peers`` sites with label skew: site k gets most of the events of classes
2k and 2k+1 (``skew``) and a few of every other class.  Each site is a real
``stream-learner run`` process with its own topic and group; production is live and
paced, so the sites learn at the same time and merge mid-stream.  Configurations:

``isolated``       the K daemons, federation off;
``fed-<agg>``      federation on, aggregator ``<agg>``;
``centralised``    one daemon that learns the whole stream (every site's events, in
                   order): the upper bound;
``without-site-0`` sites 1.. alone, FedAvg: what the honest sites can reach when
                   nothing of site 0's learning is usable;
``<attack>-<agg>`` federation on with site 0 malicious, its key on the allowlist, so
                   only aggregation can stop it: ``sign_flip`` (publishes the last
                   aggregate minus 10x its update), ``noise`` (its weights + N(0, 10^2)),
                   ``label_flip`` (it learns, and publishes, from labels c -> C-1-c).

Federation runs at ``every_events``/``every_seconds`` (shorter than the defaults: the
shards are short), with ``max_distance`` out of the way for the same reason as the
allowlisted attacker: the point is what the aggregators withstand.  Accuracy is measured
on one held-out set drawn from the final concept, balanced over classes, with each
site's final checkpoint (after two more rounds once every site has learned its shard);
prequential accuracy is each daemon's own ``stream_learner_prequential_accuracy``.
Attack runs report the honest sites' mean, compared with the same sites in the clean run.

Overhead: one daemon in this process, a backlog of ``overhead_events``, federation off
and on at the default period, with a peer (this benchmark) publishing a signed model
every second, so each round merges a fresh update; runs alternate, the median counts.

Options: the fields of :class:`FederationConfig` (keyword arguments of :func:`main`, or
``STREAM_LEARNER_BENCH_<NAME>`` env vars).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .attacker import ATTACKS as ATTACKER_ATTACKS, ENV as ATTACKER_ENV
from .common import apply_options, machine_info, progress, write_and_report

DEFAULT_OUT = Path("bench-results/federation.json")
AGGREGATORS = ("fedavg", "trimmed_mean", "median", "centered_clip")
"""Krum and Multi-Krum need n >= 2f + 3 models: 5 for f = 1, one more than a site has
here (itself and three peers), so they fall back to the median; add them with
``aggregators=...,krum`` on a larger federation."""
ROBUST = ("trimmed_mean", "median", "centered_clip", "krum", "multi_krum")
ATTACKS = ("sign_flip", "noise", "label_flip")
BAR_CENTRAL = 0.01      # federated (best clean aggregator) >= centralised - this
BAR_ISOLATED = 0.05     # ... and >= isolated + this
BAR_ATTACK = 0.01       # best robust under attack >= the same aggregator clean - this
BAR_OVERHEAD = 0.90     # events/s with federation >= this x without


@dataclass
class FederationConfig:
    peers: int = 4
    classes: int = 8
    dim: int = 8
    separation: float = 1.5       # scale of the class centres; noise is N(0, 1)
    events: int = 6_000           # per site
    rate: float = 600.0           # events/s per site
    skew: float = 0.95
    heldout: int = 4_000
    every_events: int = 500
    every_seconds: float = 1.0
    aggregators: tuple[str, ...] = AGGREGATORS
    attacks: tuple[str, ...] = ATTACKS
    overhead_events: int = 300_000
    overhead_repeats: int = 3
    seed: int = 0

    @classmethod
    def build(cls, quick: bool, **overrides: Any) -> "FederationConfig":
        cfg = cls()
        if quick:
            cfg.events, cfg.heldout, cfg.aggregators = 1_500, 1_000, ("fedavg", "trimmed_mean")
            # 120k events: two rounds at the default federation.every_events (50k).
            cfg.attacks, cfg.overhead_events, cfg.overhead_repeats = ("sign_flip",), 120_000, 1
            cfg.rate = 500.0
        return apply_options(cfg, overrides, "federation", str_tuples=("aggregators", "attacks"))


# ----------------------------------------------------------------------------- stream

class Stream:
    """The drifting stream, its split into sites, and the held-out set."""

    def __init__(self, cfg: FederationConfig) -> None:
        rng = np.random.default_rng(cfg.seed)
        self.cfg = cfg
        self.centres = [rng.normal(scale=cfg.separation, size=(cfg.classes, cfg.dim))
                        for _ in range(2)]
        n = cfg.events * cfg.peers
        y = rng.integers(0, cfg.classes, n)
        concept = (np.arange(n) >= n // 2).astype(int)
        x = np.stack([self.centres[c][k] for c, k in zip(concept, y)]) + \
            rng.normal(size=(n, cfg.dim))
        # Deal each event to its class's home site with probability `skew`, else to any.
        home = (y // 2) % cfg.peers
        site = np.where(rng.random(n) < cfg.skew, home, rng.integers(0, cfg.peers, n))
        self.x, self.y, self.site = x.astype(np.float32), y, site
        hy = np.arange(cfg.heldout) % cfg.classes
        self.x_test = (self.centres[1][hy] + rng.normal(size=(cfg.heldout, cfg.dim))).astype(
            np.float32)
        self.y_test = hy

    def shard(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        keep = self.site == k
        return self.x[keep], self.y[keep]


def produce_paced(bs: str, topic: str, x: np.ndarray, y: np.ndarray, rate: float) -> None:
    """Publish ``x``/``y`` as events labeled ``c<y>`` at ``rate`` events/s (live, not a backlog)."""
    from kafka import KafkaProducer

    from ..synth import encode_event

    producer = KafkaProducer(bootstrap_servers=bs, linger_ms=5)
    t0 = time.monotonic()
    for i, (row, label) in enumerate(zip(x.tolist(), y.tolist())):
        producer.send(topic, encode_event(row, f"c{label}", event_id=str(i)))
        ahead = i / rate - (time.monotonic() - t0)
        if ahead > 0.02:
            time.sleep(ahead)
    producer.flush()
    producer.close()


def checkpoint_accuracy(ckpt_dir: Path, x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy on ``x``/``y`` (labels ``c<y>``) of the latest checkpoint in ``ckpt_dir``."""
    from ..checkpoint import CheckpointStore
    from ..config import Settings
    from ..learner import Learner

    state = CheckpointStore(ckpt_dir).load_latest()
    if state is None:
        raise RuntimeError(f"no checkpoint in {ckpt_dir}")
    lrn = Learner(Settings(model={"device": "cpu"}))
    lrn.load_state_dict(state["learner"])
    labels, _ = lrn.predict(x)
    return float(np.mean([p == f"c{t}" for p, t in zip(labels, y.tolist())]))


# ----------------------------------------------------------------------------- one run

def run_sites(bs: str, stream: Stream, work: Path, name: str, *, aggregator: str | None,
              attack: str = "none", central: bool = False,
              env: dict[str, str] | None = None, without_first: bool = False
              ) -> dict[str, Any]:
    """One configuration: every site (or the one central daemon) learns live; returns
    per-site final and prequential accuracy and the federation counters."""
    from ..federation.keys import generate
    from ..synth import ensure_topics
    from .processes import DaemonProcess, wait_for

    cfg = stream.cfg
    tag = uuid.uuid4().hex[:6]
    ks = [0] if central else list(range(1 if without_first else 0, cfg.peers))
    sites = ["central"] if central else [f"site-{k}" for k in ks]
    topics = [f"fb-{name}-{s}-{tag}" for s in sites]
    fed_topic = f"fb-{name}-fed-{tag}"
    ensure_topics(bs, {fed_topic: 1, **{t: 1 for t in topics},
                       **{f"{t}.dlq": 1 for t in topics},
                       **{f"{t}.predictions": 1 for t in topics}})
    root = work / name
    peers_dir = root / "peers"
    if aggregator is not None:
        peers_dir.mkdir(parents=True)
        for s in sites:
            generate(root / "private", s)
            (root / "private" / f"{s}.pub").replace(peers_dir / f"{s}.pub")
    shards = [(stream.x, stream.y)] if central else [stream.shard(k) for k in ks]
    if attack == "label_flip":
        x0, y0 = shards[0]
        shards[0] = (x0, cfg.classes - 1 - y0)
    procs = []
    try:
        for k, (site, topic) in enumerate(zip(sites, topics)):
            env_k = {"STREAM_LEARNER_PROBES__PER_CLASS": "0", **(env or {})}
            if aggregator is not None:
                env_k.update({
                    "STREAM_LEARNER_FEDERATION__PRIVATE_KEY_FILE": str(root / "private" /
                                                                       f"{site}.key"),
                    "STREAM_LEARNER_FEDERATION__PEERS_DIR": str(peers_dir),
                    "STREAM_LEARNER_FEDERATION__TOPIC": fed_topic,
                    "STREAM_LEARNER_FEDERATION__AGGREGATOR": aggregator,
                    "STREAM_LEARNER_FEDERATION__EVERY_EVENTS": str(cfg.every_events),
                    "STREAM_LEARNER_FEDERATION__EVERY_SECONDS": str(cfg.every_seconds),
                    "STREAM_LEARNER_FEDERATION__MAX_DISTANCE": "1e12"})
            module = "stream_learner"
            if aggregator is not None and k == 0 and attack in ATTACKER_ATTACKS:
                # The daemon has no attack option: a benchmark-side wrapper corrupts it.
                env_k[ATTACKER_ENV], module = attack, "stream_learner.benchmarks.attacker"
            procs.append(DaemonProcess(bs, root / site / "ckpt", topic, f"g-{site}-{tag}",
                                       extra_env=env_k, log_path=root / f"{site}.log",
                                       module=module))
        for d in procs:
            wait_for(lambda d=d: d.assert_alive() or d.metric("stream_learner_ready") == 1,
                     120, f"{name}: daemon ready")
        rate = cfg.rate * (cfg.peers if central else 1)
        threads = [threading.Thread(target=produce_paced, args=(bs, t, x, y, rate))
                   for t, (x, y) in zip(topics, shards)]
        t0 = time.monotonic()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        for d, (x, _) in zip(procs, shards):
            wait_for(lambda d=d, n=len(x): d.assert_alive() or
                     d.metric("stream_learner_events_learned_total") >= n, 300,
                     f"{name}: shard learned")
        if aggregator is not None:    # two more rounds: every site merges the final models
            for d in procs:
                r = d.metric("stream_learner_federation_rounds_total")
                wait_for(lambda d=d, r=r: d.metric("stream_learner_federation_rounds_total")
                         >= r + 2, 60, f"{name}: two more rounds")
        seconds = time.monotonic() - t0
        metrics = [d.metrics() for d in procs]
        for d in procs:
            code = d.terminate()
            if code != 0:
                raise RuntimeError(f"{name}: a daemon exited {code}; see {d.log_path}")
    finally:
        for d in procs:
            d.close()
    final = [checkpoint_accuracy(root / s / "ckpt", stream.x_test, stream.y_test) for s in sites]
    out: dict[str, Any] = {
        "final": final,
        "prequential": [m.get("stream_learner_prequential_accuracy", float("nan"))
                        for m in metrics],
        "seconds": seconds, "events": [len(x) for x, _ in shards]}
    if aggregator is not None:
        out["rounds"] = [m.get("stream_learner_federation_rounds_total", 0) for m in metrics]
        out["bytes_sent"] = sum(m.get("stream_learner_federation_sent_bytes_total", 0)
                                for m in metrics)
        rejected: dict[str, float] = {}
        for m in metrics:
            for k, v in m.items():
                if k.startswith("stream_learner_federation_updates_rejected_total{") and v:
                    reason = k.split('reason="')[1].split('"')[0]
                    rejected[reason] = rejected.get(reason, 0) + v
        out["rejected"] = rejected       # attack runs: oversize_norm is the outlier filter
        out["distance"] = [m.get("stream_learner_federation_model_distance", float("nan"))
                           for m in metrics]
    out["mean_final"] = float(np.mean(final))
    # Sites 1.. are honest in every run: attack runs compare with the same sites clean.
    out["honest_final"] = float(np.mean(final if without_first or central else final[1:]))
    out["mean_prequential"] = float(np.mean(out["prequential"]))
    return out


# ----------------------------------------------------------------------------- overhead

def overhead(bs: str, cfg: FederationConfig, work: Path) -> dict[str, Any]:
    """Single-daemon events/s on a backlog, federation off vs on (default period)."""
    from ..config import FederationSettings, Settings
    from ..federation.codec import Update, encode
    from ..federation.keys import generate, load_private
    from ..learner import Learner
    from ..synth import ensure_topics
    from .throughput import build_values, daemon_settings, produce_values, run_daemon

    rng = np.random.default_rng(cfg.seed + 1)
    centres = rng.normal(scale=cfg.separation, size=(cfg.classes, cfg.dim))
    y = rng.integers(0, cfg.classes, cfg.overhead_events)
    x = (centres[y] + rng.normal(size=(len(y), cfg.dim))).astype(np.float32)
    topic, fed_topic = f"fo-{uuid.uuid4().hex[:6]}", f"fo-fed-{uuid.uuid4().hex[:6]}"
    ensure_topics(bs, {topic: 1, fed_topic: 1, f"{topic}.dlq": 1, f"{topic}.predictions": 1})
    produce_values(bs, topic, build_values(x, np.array([f"c{v}" for v in y])), 1, 1)
    keys, peers = work / "overhead-keys", work / "overhead-peers"
    peers.mkdir(parents=True)
    for name in ("daemon", "bench-peer"):
        generate(keys, name)
        (keys / f"{name}.pub").replace(peers / f"{name}.pub")
    # The peer's model: the same shape, trained a little on the same stream.
    peer = Learner(Settings(model={"device": "cpu"}))
    peer.learn(x[:2_000], [f"c{v}" for v in y[:2_000]])
    assert peer.model is not None
    params = {k: v.detach().clone() for k, v in peer.model.state_dict().items()}
    key = load_private(keys / "bench-peer.key")
    stop = threading.Event()

    def publish() -> None:
        from kafka import KafkaProducer
        producer = KafkaProducer(bootstrap_servers=bs, max_request_size=64 * 1024 * 1024)
        while not stop.wait(1.0):
            update = Update(sender="bench-peer", version=time.time_ns() // 1000, samples=5_000,
                            labels=list(peer.labels.labels), timestamp=time.time(),
                            nonce=os.urandom(16), n_features=cfg.dim,
                            hidden=tuple(peer.model.hidden), params=params,  # type: ignore
                            base_version=None, federation=fed_topic)
            producer.send(fed_topic, encode(update, key, float16=True))
        producer.close()

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    rates: dict[str, list[float]] = {"off": [], "on": []}
    rounds: list[float] = []
    try:
        for _ in range(cfg.overhead_repeats):
            for mode in ("off", "on"):
                with tempfile.TemporaryDirectory(prefix="bench-fed-") as tmp:
                    settings = daemon_settings(bs, topic, "replay", Settings().batch.size,
                                               Path(tmp))
                    if mode == "on":
                        settings = settings.model_copy(update={"federation": FederationSettings(
                            private_key_file=keys / "daemon.key", peers_dir=peers,
                            topic=fed_topic)})
                    daemon, run = run_daemon(settings, cfg.overhead_events, timeout_s=600)
                if run.timed_out or run.t_first is None or run.t_last is None:
                    raise RuntimeError(f"overhead run ({mode}) did not finish")
                rates[mode].append(daemon.counters.consumed / (run.t_last - run.t_first))
                if mode == "on":
                    rounds.append(daemon.metrics.federation.rounds._value.get())
                progress(f"overhead {mode}: {rates[mode][-1]:,.0f} events/s")
    finally:
        stop.set()
        publisher.join(5)
    off, on = statistics.median(rates["off"]), statistics.median(rates["on"])
    n = cfg.overhead_events
    median_rounds = statistics.median(rounds)
    # What one round costs the loop, all of the difference charged to rounds.  A backlog
    # that ends before the first round (fewer events than federation.every_events, faster
    # than every_seconds) measured no round at all: no cost per round, and no bar.
    return {"rates": rates, "off": off, "on": on, "ratio": on / off, "rounds": rounds,
            "events": n, "measured": median_rounds > 0,
            "seconds_per_round": (n / on - n / off) / median_rounds if median_rounds else None}


# ----------------------------------------------------------------------------- driver

def run(cfg: FederationConfig) -> dict[str, Any]:
    from ..broker import EmbeddedBroker

    stream = Stream(cfg)
    results: dict[str, Any] = {"config": asdict(cfg), "machine": machine_info(), "runs": {}}
    plan: list[tuple[str, dict[str, Any]]] = [("isolated", {"aggregator": None}),
                                              ("centralised", {"aggregator": None,
                                                               "central": True})]
    plan += [(f"fed-{a}", {"aggregator": a}) for a in cfg.aggregators]
    if cfg.attacks:     # what the honest sites reach with site 0's data gone altogether
        plan.append(("without-site-0", {"aggregator": "fedavg", "without_first": True}))
    plan += [(f"{atk}-{a}", {"aggregator": a, "attack": atk})
             for atk in cfg.attacks for a in cfg.aggregators]
    with tempfile.TemporaryDirectory(prefix="bench-federation-") as tmp, \
            EmbeddedBroker(log_file=Path(tmp) / "tansu.log") as broker:
        bs = broker.bootstrap_servers
        for name, kwargs in plan:
            t0 = time.monotonic()
            r = results["runs"][name] = run_sites(bs, stream, Path(tmp), name, **kwargs)
            progress(f"{name}: final {_pct(r['mean_final'])} (sites "
                     f"{', '.join(_pct(v) for v in r['final'])}), prequential "
                     f"{_pct(r['mean_prequential'])}, {time.monotonic() - t0:.0f}s")
        results["overhead"] = overhead(bs, cfg, Path(tmp))
    results["bars"] = bars(results)
    return results


def bars(results: dict[str, Any]) -> list[dict[str, Any]]:
    from ..config import FederationSettings

    runs = results["runs"]
    out: list[dict[str, Any]] = []
    central, isolated = runs["centralised"]["mean_final"], runs["isolated"]["mean_final"]
    clean = {name[4:]: r for name, r in runs.items() if name.startswith("fed-")}
    if clean:
        best = max(clean, key=lambda a: clean[a]["mean_final"])
        value = clean[best]["mean_final"]
        out.append({"bar": f"federated (best: {best}) >= centralised - "
                           f"{BAR_CENTRAL * 100:.0f} pt", "value": value, "reference": central,
                    "pass": value >= central - BAR_CENTRAL})
        default = FederationSettings().aggregator
        if default in clean and default != best:
            value = clean[default]["mean_final"]
            out.append({"bar": f"federated (default: {default}) >= centralised - "
                               f"{BAR_CENTRAL * 100:.0f} pt", "value": value,
                        "reference": central, "pass": value >= central - BAR_CENTRAL})
        value = clean[default if default in clean else best]["mean_final"]
        out.append({"bar": f"federated ({default if default in clean else best}) >= "
                           f"isolated + {BAR_ISOLATED * 100:.0f} pt", "value": value,
                    "reference": isolated, "pass": value >= isolated + BAR_ISOLATED})
    for atk in results["config"]["attacks"]:
        robust = [(runs[f"{atk}-{a}"]["honest_final"], a) for a in ROBUST
                  if f"{atk}-{a}" in runs and a in clean]
        if robust:
            value, best = max(robust)
            ref = clean[best]["honest_final"]
            out.append({"bar": f"{atk}: best robust ({best}) >= its clean run - "
                               f"{BAR_ATTACK * 100:.0f} pt", "value": value, "reference": ref,
                        "pass": value >= ref - BAR_ATTACK})
            ref = max(r["honest_final"] for r in clean.values())
            out.append({"bar": f"{atk}: best robust ({best}) >= best clean run - "
                               f"{BAR_ATTACK * 100:.0f} pt", "value": value, "reference": ref,
                        "pass": value >= ref - BAR_ATTACK})
            if "without-site-0" in runs:
                ref = runs["without-site-0"]["honest_final"]
                out.append({"bar": f"{atk}: best robust ({best}) >= sites 1.. without site 0 "
                                   f"- {BAR_ATTACK * 100:.0f} pt", "value": value,
                            "reference": ref, "pass": value >= ref - BAR_ATTACK})
        if f"{atk}-fedavg" in runs and "fedavg" in clean:
            value, ref = runs[f"{atk}-fedavg"]["honest_final"], clean["fedavg"]["honest_final"]
            out.append({"bar": f"{atk}: fedavg degrades (< its clean run - "
                               f"{BAR_ATTACK * 100:.0f} pt)", "value": value, "reference": ref,
                        "pass": value < ref - BAR_ATTACK})
    ov = results.get("overhead")
    if ov and ov.get("measured", True):
        out.append({"bar": f"federation on >= {BAR_OVERHEAD:.2f}x off (events/s)",
                    "value": ov["ratio"], "reference": BAR_OVERHEAD,
                    "pass": ov["ratio"] >= BAR_OVERHEAD})
    return out


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def _per_round(ov: dict[str, Any]) -> str:
    per = ov.get("seconds_per_round")
    if per is None:
        return "no federation round during the backlog: overhead not measured, no bar"
    if per <= 0:
        return "no measurable cost a round: federation on was as fast or faster (noise)"
    return f"{per * 1e3:.1f} ms a round"


def print_report(results: dict[str, Any], out: Path) -> None:
    cfg = results["config"]
    print(f"\nfederation: {cfg['peers']} sites x {cfg['events']:,} events, {cfg['classes']} "
          f"classes, skew {cfg['skew']}, one drift at the halfway point; rounds every "
          f"{cfg['every_events']} events or {cfg['every_seconds']}s")
    print(f"{'configuration':<24}{'final (mean)':>13}{'honest':>9}{'prequential':>13}"
          f"{'per site final':>34}{'rejected':>10}")
    for name, r in results["runs"].items():
        sites = " ".join(_pct(v) for v in r["final"])
        print(f"{name:<24}{_pct(r['mean_final']):>13}{_pct(r['honest_final']):>9}"
              f"{_pct(r['mean_prequential']):>13}{sites:>34}{sum(r.get('rejected', {}).values()):>10.0f}")
    ov = results.get("overhead")
    if ov:
        print(f"\noverhead, one daemon, {ov['events']:,}-event backlog, default period: off "
              f"{ov['off']:,.0f} events/s, on {ov['on']:,.0f} events/s, ratio {ov['ratio']:.2f}"
              f" ({', '.join(f'{v:.0f}' for v in ov['rounds'])} rounds; {_per_round(ov)})")
    print("\nbars:")
    for b in results["bars"]:
        print(f"  [{'PASS' if b['pass'] else 'FAIL'}] {b['bar']}: {b['value']:.3f} "
              f"(reference {b['reference']:.3f})")
    print(f"\nJSON: {out}")


def main(out: Path | None = None, quick: bool = False, **options: Any) -> int:
    return write_and_report(run(FederationConfig.build(quick, **options)), out or DEFAULT_OUT,
                            quick, print_report)
