"""What both tabular baselines run per request: the same validation and model code as the
service (schema from metadata.json, verified safetensors weights), in-process, unbatched."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from deployments.config import resolve_model_dir
from deployments.errors import ServingError
from deployments.protocol import v1
from deployments.repository.store import load_kind

MODEL = "fraud-risk"


def make_app() -> FastAPI:
    torch.set_num_threads(int(os.environ.get("BASELINE_TORCH_THREADS", "1")))
    model_dir = resolve_model_dir(Path("models"))
    kind = load_kind(model_dir, MODEL, "1")
    runtime = kind.load(str(model_dir), "cpu", [])
    app = FastAPI()

    @app.post(f"/v1/models/{MODEL}:predict")
    async def predict(request: Request) -> Any:
        try:
            instances = v1.parse_predict(await request.json(), 1024)
            outputs = runtime.forward(runtime.prepare(kind.decode_v1(instances)))
        except ServingError as exc:
            return JSONResponse(exc.to_body(), status_code=exc.status_code)
        return {
            "predictions": kind.encode_v1(outputs),
            "model_name": MODEL,
            "model_version": "1",
        }

    @app.get("/v2/health/ready")
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    return app
