"""What every tabular baseline and peer framework runs per request: the same validation and
model code as the service (schema from metadata.json, verified safetensors weights),
in-process. `TabularModel` imports no web framework, so the peers' venvs (some without
FastAPI) share it; `make_app` is the FastAPI baseline over it, unbatched.

No `from __future__ import annotations` here: FastAPI resolves the endpoint's `Request`
annotation against module globals, and this module imports FastAPI only inside make_app."""

import os
from pathlib import Path
from typing import Any

from deployments.config import resolve_model_dir
from deployments.errors import ServingError
from deployments.kinds.base import Batch, Columns
from deployments.kinds.torch_threads import ThreadCount
from deployments.protocol import v1
from deployments.repository.store import load_kind

MODEL = "fraud-risk"
VERSION = "1"
PREDICT_PATH = f"/v1/models/{MODEL}:predict"
READY_PATH = "/v2/health/ready"
MAX_INSTANCES = 1024


class TabularModel:
    """The model as a replica loads it, split into the steps a framework's hooks call:
    `decode` (validation, per request), `forward` / `forward_many` (the model, one request
    or a batch of them), `answer` (the v1 body)."""

    def __init__(self) -> None:
        # OpenMP's thread count is per thread, and frameworks run hooks on threads of their
        # own: applied before every forward pass (deployments.kinds.torch_threads).
        self.threads = ThreadCount(int(os.environ.get("BASELINE_TORCH_THREADS", "1")))
        self.threads.apply()
        model_dir = resolve_model_dir(Path("models"))
        self.kind = load_kind(model_dir, MODEL, VERSION)
        self.runtime = self.kind.load(str(model_dir), "cpu", [])

    def __reduce__(self) -> tuple[Any, ...]:
        # Frameworks that spawn workers pickle what they serve (ThreadCount's thread-local
        # state does not pickle): each worker loads and verifies its own copy.
        return (TabularModel, ())

    def decode(self, body: Any) -> Columns:
        """Validated, prepared columns of one request body; raises ServingError."""
        instances = v1.parse_predict(body, MAX_INSTANCES)
        return self.runtime.prepare(self.kind.decode_v1(instances))

    def forward(self, columns: Columns) -> Columns:
        self.threads.apply()
        return self.runtime.forward(columns)

    def forward_many(self, parts: list[Columns]) -> list[Columns]:
        """One forward pass over many requests' rows, split back per request."""
        batch = Batch.of(parts)
        return Batch(self.forward(batch.columns), batch.offsets).parts()

    def answer(self, outputs: Columns) -> dict[str, Any]:
        return {
            "predictions": self.kind.encode_v1(outputs),
            "model_name": MODEL,
            "model_version": VERSION,
        }

    def predict(self, body: Any) -> tuple[int, dict[str, Any]]:
        """Status and body for one request, unbatched; errors as the service words them."""
        try:
            return 200, self.answer(self.forward(self.decode(body)))
        except ServingError as exc:
            return exc.status_code, exc.to_body()


def make_app() -> Any:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    model = TabularModel()
    app = FastAPI()

    @app.post(PREDICT_PATH)
    async def predict(request: Request) -> Any:
        status, body = model.predict(await request.json())
        return body if status == 200 else JSONResponse(body, status_code=status)

    @app.get(READY_PATH)
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    return app
