"""Baseline: plain FastAPI + uvicorn running the same text encoder per request (no batching
across requests, no Ray). What a team would write first.

    uvicorn benchmarks.baselines.text_fastapi:app --port 8100 --workers 1
"""

from __future__ import annotations

import os

import torch
from fastapi import FastAPI
from pydantic import BaseModel

from deployments.text.encoder import TextEncoder

torch.set_num_threads(int(os.environ.get("BASELINE_TORCH_THREADS", "2")))
app = FastAPI()
encoder = TextEncoder()
encoder.warm_up()


class Instance(BaseModel):
    text: str


class Request(BaseModel):
    instances: list[Instance]


@app.post("/v1/models/minilm:predict")
def predict(request: Request) -> dict:
    # A sync endpoint: FastAPI runs it in its threadpool, one forward pass per request.
    embeddings = encoder.encode([i.text for i in request.instances])
    return {"predictions": [{"embedding": row} for row in embeddings.tolist()]}
