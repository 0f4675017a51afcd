"""A steady, bounded background load of real HTTP requests, recording every outcome."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import requests

from tests.support import MODEL, sample_transactions, wait_until

RECORDS = sample_transactions(64, seed=33)


class SteadyLoad:
    def __init__(
        self,
        base_url: str,
        clients: int = 4,
        headers: dict[str, str] | None = None,
        max_seconds: float = 300,
        instances_per_request: int = 1,
    ) -> None:
        self.url = f"{base_url}/v1/models/{MODEL}:predict"
        self.clients = clients
        self.headers = headers or {}
        self.max_seconds = max_seconds
        self.instances = instances_per_request
        self.outcomes: list[tuple[int, dict[str, Any]]] = []
        self.versions: Counter[str] = Counter()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(clients)]

    def __enter__(self) -> SteadyLoad:
        for t in self._threads:
            t.start()
        wait_until(lambda: len(self.outcomes) >= 10, 60, "steady load to start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)

    def _run(self, index: int) -> None:
        deadline = threading.Timer(self.max_seconds, self._stop.set)
        deadline.daemon = True
        deadline.start()
        i = index
        with requests.Session() as http:
            while not self._stop.is_set():
                i += self.clients
                try:
                    resp = http.post(
                        self.url,
                        json={"instances": [RECORDS[(i + k) % 64] for k in range(self.instances)]},
                        headers=self.headers,
                        timeout=30,
                    )
                    body = resp.json() if resp.content else {}
                    self.outcomes.append((resp.status_code, body))
                    if resp.status_code == 200:
                        self.versions[body["model_version"]] += 1
                except requests.RequestException as exc:
                    self.outcomes.append((-1, {"error": repr(exc)}))

    def wait_for_more(self, n: int, timeout_s: float = 60) -> None:
        target = len(self.outcomes) + n
        wait_until(lambda: len(self.outcomes) >= target, timeout_s, f"{n} more requests")

    def failures(self) -> list[tuple[int, dict[str, Any]]]:
        return [o for o in self.outcomes if o[0] != 200]
