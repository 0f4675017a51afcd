"""A bounded, rotating JSON-lines log of shadow disagreements.

One line per disagreeing row: request id, trace id, a hash of the validated input row, and
both outputs. Size-bounded by rotation (`max_bytes` x (`backups` + 1) on disk at most), and
written through the logging module's handler so a full or unwritable disk costs a warning,
never a request.
"""

from __future__ import annotations

import hashlib
import json
import logging
import logging.handlers
import time
from pathlib import Path
from typing import Any


class DiffLog:
    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._logger = logging.Logger(f"shadow-diff:{path}")  # private: no propagation
        self._logger.propagate = False
        handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8", delay=True
        )
        handler.setFormatter(logging.Formatter("%(message)s"))
        self._logger.addHandler(handler)

    def write(self, record: dict[str, Any]) -> None:
        self._logger.info(json.dumps({"ts": round(time.time(), 3), **record}, default=str))

    def close(self) -> None:
        for handler in self._logger.handlers:
            handler.close()


def row_hash(row: Any) -> str:
    """sha256 of one validated feature row: joins log lines to inputs without storing them."""
    data = row.tobytes() if hasattr(row, "tobytes") else json.dumps(row, sort_keys=True).encode()
    return hashlib.sha256(data).hexdigest()[:32]
