"""Hostile bodies against the served graph, over real HTTP: each gets a JSON 4xx that says
what is wrong, and none leaves an ERROR record in any serve actor's log (a client must not
be able to flood the log, or reach a 500)."""

from __future__ import annotations

import json

import pytest
import requests

from tests.support import sample_transactions

pytestmark = pytest.mark.slow

V1 = "/v1/models/fraud-risk:predict"
V2 = "/v2/models/fraud-risk/infer"
TEXT = "/v1/models/minilm:predict"


def instance(**override: object) -> str:
    """One valid transaction as JSON text, with fields replaced by raw JSON text."""
    record = dict(sample_transactions(1)[0])
    text = json.dumps(record)
    for key, raw in override.items():
        text = text.replace(f'"{key}": {json.dumps(record[key])}', f'"{key}": {raw}')
    return text


def v2_body(shape: object, data: object, **extra: object) -> str:
    tensor = {"name": "amount_usd", "datatype": "FP32", "shape": shape, "data": data}
    return json.dumps({"inputs": [tensor], **extra})


DEEP = "[" * 2048 + "]" * 2048
HUGE_INT = "1" * 200_000
CORPUS: dict[str, tuple[str, bytes | str]] = {
    "deep nesting, v1": (V1, DEEP),
    "deep nesting, v2": (V2, DEEP),
    "deep nesting inside an instance": (V1, '{"instances": [' + instance(amount_usd=DEEP) + "]}"),
    "200k-digit integer": (V1, '{"instances": [' + instance(amount_usd=HUGE_INT) + "]}"),
    "200k-digit integer, v2": (V2, v2_body([1], [0]).replace("[0]", f"[{HUGE_INT}]")),
    "1e999": (V1, '{"instances": [' + instance(amount_usd="1e999") + "]}"),
    "NaN literal": (V1, '{"instances": [' + instance(amount_usd="NaN") + "]}"),
    "invalid UTF-8": (V1, b'{"instances": [{"merchant_category": "\xff\xfe"}]}'),
    "UTF-16 body": (V1, '{"instances": []}'.encode("utf-16")),
    "lone surrogate escape": (
        V1,
        '{"instances": [' + instance(merchant_category='"\\ud800"') + "]}",
    ),
    "not JSON": (V1, "instances=1"),
    "empty body": (V1, ""),
    "a bare number": (V1, "1"),
    "100k keys": (V1, "{" + ",".join(f'"k{i}": 0' for i in range(100_000)) + "}"),
    "100k keys in an instance": (
        V1,
        '{"instances": [{' + ",".join(f'"k{i}": 0' for i in range(100_000)) + "}]}",
    ),
    "a 900 KB string": (
        V1,
        '{"instances": [' + instance(merchant_category='"' + "a" * 900_000 + '"') + "]}",
    ),
    "too many instances": (V1, json.dumps({"instances": sample_transactions(1) * 5000})),
    "shape bomb": (V2, v2_body([10**12], [1.0])),
    "shape overflow": (V2, v2_body([2**62, 2**62], [1.0])),
    "negative shape": (V2, v2_body([-1], [1.0])),
    "shape and data disagree": (V2, v2_body([3], [1.0])),
    "parameter bomb": (
        V2,
        v2_body([1], [1.0], parameters={f"p{i}": "x" * 50 for i in range(20_000)}),
    ),
    "wrong datatype": (
        V2,
        json.dumps(
            {"inputs": [{"name": "amount_usd", "datatype": "FP99", "shape": [1], "data": [1]}]}
        ),
    ),
    "inputs not a list": (V2, '{"inputs": {"name": "x"}}'),
    "text: deep nesting": (TEXT, '{"instances": [' + DEEP + "]}"),
    "text: a 900 KB text": (TEXT, json.dumps({"instances": ["a " * 450_000]})),
    "text: a number for a text": (TEXT, '{"instances": [' + HUGE_INT + "]}"),
    "over the body limit": (V1, '{"instances": ["' + "a" * (2 << 20) + '"]}'),
}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_a_hostile_body_gets_a_json_4xx_and_logs_no_error(service, error_lines, name) -> None:
    path, body = CORPUS[name]
    if path == TEXT and "minilm" not in requests.get(service.url("/v1/models"), timeout=10).text:
        pytest.skip("minilm is not served here (the text extra is not installed)")
    resp = requests.post(
        service.url(path), data=body, headers={"content-type": "application/json"}, timeout=60
    )
    assert 400 <= resp.status_code < 500, f"{name}: {resp.status_code} {resp.text[:300]}"
    error = resp.json()
    assert error["error"] and error["code"], name
    assert len(resp.content) < 4096, f"{name}: the answer must not echo the body"
    assert error_lines.since() == [], f"{name} logged an ERROR"


def test_a_body_without_a_declared_length_is_bounded_too(service, error_lines) -> None:
    def chunks():
        for _ in range(64):
            yield b"[" * 65536

    resp = requests.post(service.url(V1), data=chunks(), timeout=60)
    assert resp.status_code == 413, resp.text[:300]
    assert error_lines.since() == []
