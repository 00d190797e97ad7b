"""Logging set-up that leaves a host application's configuration alone."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TextIO


# Attributes every LogRecord has: anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message",
                                                                             "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line; ``extra=`` fields (partition, offset, ...) are kept.

    >>> rec = logging.LogRecord("stream_learner.x", logging.WARNING, "", 0, "seek %s", ("p0",),
    ...                         None)
    >>> rec.partition, rec.offset = 3, 17
    >>> doc = json.loads(JsonFormatter().format(rec))
    >>> doc["msg"], doc["partition"], doc["offset"]
    ('seek p0', 3, 17)
    """

    def format(self, record: logging.LogRecord) -> str:
        doc = {"ts": round(record.created, 3), "level": record.levelname,
               "logger": record.name, "msg": record.getMessage()}
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in doc:
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


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
