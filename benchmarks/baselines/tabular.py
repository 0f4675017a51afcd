"""What both tabular baselines run per request: the same validation and model code as the
service (schema from metadata.json, verified safetensors weights), in-process, unbatched."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from deployments.artifacts import load_artifact
from deployments.config import resolve_model_dir
from deployments.errors import ServingError
from deployments.protocol import v1
from deployments.runner import ModelRunner
from deployments.schema import InputSchema

MODEL = "fraud-risk"


def make_app() -> FastAPI:
    torch.set_num_threads(int(os.environ.get("BASELINE_TORCH_THREADS", "1")))
    artifact = load_artifact(resolve_model_dir(Path("models")), MODEL, "1")
    runner = ModelRunner(artifact, torch.device("cpu"))
    schema = InputSchema(artifact.metadata)
    app = FastAPI()

    @app.post(f"/v1/models/{MODEL}:predict")
    async def predict(request: Request) -> Any:
        try:
            instances = v1.parse_predict(await request.json(), 1024)
            (outputs,) = runner.run_batch([schema.to_features(instances)])
            if isinstance(outputs, ServingError):
                raise outputs
        except ServingError as exc:
            return JSONResponse(exc.to_body(), status_code=exc.status_code)
        return {"predictions": v1.predictions(outputs), "model_name": MODEL, "model_version": "1"}

    @app.get("/v2/health/ready")
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    return app
