# Log lines as JSON objects, one a line (`edge-gateway --log-format json ...`), for a log
# shipper (journald's, Loki's, Elasticsearch's) to index without parsing prose. A line
# about a device carries its id in "device" (logging's extra={"device": ...}), so the
# lines of one device are a query away; untrusted strings stay escaped by JSON itself.
from __future__ import annotations

import json
import logging
import time


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                + ".%03dZ" % record.msecs, "level": record.levelname, "logger": record.name,
                "msg": record.getMessage()}
        device = getattr(record, "device", None)
        if device is not None:
            line["device"] = device
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def setup(level: int, fmt: str) -> None:
    """The process's logging: "text" (one human line) or "json" on stderr. Like
    logging.basicConfig, nothing when the root logger has handlers already (a test's
    log capture, when it calls main() in-process)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
