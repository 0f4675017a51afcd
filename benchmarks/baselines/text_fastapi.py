"""Baseline: plain FastAPI + uvicorn running the same text encoder per request (no batching
across requests, no Ray). What a team would write first.

    uvicorn benchmarks.baselines.text_fastapi:app --port 8100 --workers 1
"""

from __future__ import annotations

import os

from fastapi import FastAPI
from pydantic import BaseModel

from deployments.kinds.text.encoder import TextEncoder
from deployments.kinds.torch_threads import ThreadCount

# Applied in each threadpool thread too (an OpenMP thread count is per thread).
THREADS = ThreadCount(int(os.environ.get("BASELINE_TORCH_THREADS", "2")))
THREADS.apply()
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
    THREADS.apply()
    embeddings = encoder.encode([i.text for i in request.instances])
    return {"predictions": [{"embedding": row} for row in embeddings.tolist()]}
