"""Baseline: plain FastAPI + uvicorn, the model run per request in the worker process.

uvicorn benchmarks.baselines.tabular_fastapi:app --workers 1|2
"""

from benchmarks.baselines.tabular import make_app

app = make_app()
