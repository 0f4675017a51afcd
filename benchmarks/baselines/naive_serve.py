"""Baseline: the same per-request code as one Ray Serve deployment with default settings
(max_ongoing_requests, queueing, one replica): what a first Serve app looks like."""

from ray import serve

from benchmarks.baselines.tabular import make_app

fastapi_app = make_app()


@serve.deployment
@serve.ingress(fastapi_app)
class NaiveModel:
    pass


app = NaiveModel.bind()
