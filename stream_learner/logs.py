"""Logging set-up that leaves a host application's configuration alone."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TextIO


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {"ts": round(record.created, 3), "level": record.levelname,
               "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def configure_logging(level: str = "INFO", json_format: bool = False,
                      stream: TextIO | None = None) -> None:
    """Attach one handler to our logger and kafka-python's, only if none is set."""
    ours = logging.getLogger("stream_learner")
    ours.setLevel(level.upper())
    if ours.handlers:
        return
    handler = logging.StreamHandler(stream or sys.stderr)
    if json_format:
        handler.setFormatter(JsonFormatter())
    else:
        fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        fmt.converter = time.gmtime
        handler.setFormatter(fmt)
    ours.addHandler(handler)
    ours.propagate = False
    # kafka-python retries on its own and logs every retry; errors are what an operator needs.
    kafka = logging.getLogger("kafka")
    if not kafka.handlers:
        kafka.addHandler(handler)
        kafka.setLevel(logging.DEBUG if level.upper() == "DEBUG" else logging.ERROR)
        kafka.propagate = False
