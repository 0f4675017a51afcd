"""Peer: BentoML 1.4.40, one service worker, on the repository's code
(benchmarks.baselines.tabular), one request at a time.

BentoML routes an API by its method name unless `@bentoml.api(route=...)` says otherwise: here
it serves POST /v1/models/fraud-risk:predict directly, no mounted ASGI app. The body's
parameter is positional-only, which BentoML 1.4 takes as the whole JSON body (a root input),
so the repository's own `v1.parse_predict` sees the envelope as sent; `ctx` carries a
refused request's status. The method is sync, BentoML's usual form: it runs on BentoML's
thread pool. Readiness: BentoML's GET /readyz. Access log off, as the FastAPI baseline.

    bentoml serve benchmarks.peers.bentoml_service:FraudRisk --host 127.0.0.1 --port 3000
"""

from __future__ import annotations

from typing import Any

import bentoml

from benchmarks.baselines.tabular import PREDICT_PATH, TabularModel


@bentoml.service(workers=1, logging={"access": {"enabled": False}})
class FraudRisk:
    def __init__(self) -> None:
        self.model = TabularModel()

    @bentoml.api(route=PREDICT_PATH)
    def predict(self, body: Any, /, ctx: bentoml.Context) -> dict[str, Any]:
        status, answer = self.model.predict(body)
        ctx.response.status_code = status
        return answer
