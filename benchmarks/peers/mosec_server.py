"""Peer: Mosec 0.9.8, two stages on the repository's code (benchmarks.baselines.tabular):

  Preprocess  one process, one request at a time: `TabularModel.decode` (envelope, schema,
              feature vector), the validation the service runs in its Validator
  Inference   one process, dynamic batching (max_batch_size 64, max_wait_time 3 ms): one
              forward pass over the batch's rows, then the v1 body per request

Mosec 0.9.8's `append_worker(route=...)` takes a custom path, so both stages serve the same
POST /v1/models/fraud-risk:predict as the other systems. Readiness: Mosec's own GET /
(it answers once the Rust front is up; requests then queue until the workers connect).
Differences Mosec imposes: a refused request answers 422 (Mosec's ValidationError, any
ServingError status) with Mosec's text `request validation error: <our JSON body>`.

    python -m benchmarks.peers.mosec_server --address 127.0.0.1 --port 8000
"""

from __future__ import annotations

import json
from typing import Any

from mosec import Server, ValidationError, Worker

from benchmarks.baselines.tabular import PREDICT_PATH, TabularModel
from deployments.errors import ServingError


class Preprocess(Worker):
    def __init__(self) -> None:
        super().__init__()
        self.model = TabularModel()

    def forward(self, data: Any) -> Any:
        try:
            return self.model.decode(data)
        except ServingError as exc:
            raise ValidationError(json.dumps(exc.to_body())) from exc


class Inference(Worker):
    def __init__(self) -> None:
        super().__init__()
        self.model = TabularModel()

    def forward(self, data: list[Any]) -> list[dict[str, Any]]:
        return [self.model.answer(out) for out in self.model.forward_many(data)]

    def serialize(self, data: Any) -> bytes:
        # Mosec's default is json.dumps(indent=2); compact, as FastAPI's JSONResponse writes.
        return json.dumps(data, separators=(",", ":")).encode()


def main() -> None:
    server = Server()  # reads --address/--port/... from argv
    server.append_worker(Preprocess, num=1, route=PREDICT_PATH)
    server.append_worker(Inference, num=1, max_batch_size=64, max_wait_time=3, route=PREDICT_PATH)
    server.run()


if __name__ == "__main__":
    main()
