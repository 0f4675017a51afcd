"""Bounded JSON request bodies: every hostile body is a 400 naming field and reason.

No Ray. The corpus covers what stdlib `json.loads` turns into a 500 (RecursionError,
ValueError from Python's int limit) or lets through (NaN, 1e999 as inf, lone surrogates),
and what only a limit refuses (depth, number length, string length, keys, items).
"""

from __future__ import annotations

import contextlib
import json
import pickle
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deployments.errors import BadRequest
from deployments.protocol.json_body import (
    DEFAULT_LIMITS,
    EMPTY_MESSAGE,
    JsonLimits,
    json_response_bytes,
    parse_json,
)


def refused(body: bytes, limits: JsonLimits = DEFAULT_LIMITS) -> BadRequest:
    with pytest.raises(BadRequest) as info:
        parse_json(body, limits)
    error = info.value
    assert error.status_code == 400
    assert error.message
    assert error.details, error.message
    for detail in error.details:
        assert set(detail) == {"field", "reason"}
        assert isinstance(detail["field"], str) and detail["field"]
        assert isinstance(detail["reason"], str) and detail["reason"]
    return error


def v1(*instances: str) -> bytes:
    return ('{"instances": [' + ", ".join(instances) + "]}").encode()


def keys(n: int) -> str:
    return "{" + ",".join(f'"k{i}":{i}' for i in range(n)) + "}"


DEEP_ARRAY = "nesting deeper than the limit of 32"

# (name, body, the field named, a phrase of the reason)
HOSTILE = [
    ("2 KB of [", b"[" * 2048, "[0][0][0]", DEEP_ARRAY),
    ("100 KB of [", b"[" * 100_000, "[0][0][0]", DEEP_ARRAY),
    ('{"a": nested', b'{"a":' * 2000, "a.a.a", DEEP_ARRAY),
    ("deep and balanced", b"[" * 40 + b"]" * 40, "[0][0][0]", DEEP_ARRAY),
    ("past orjson's own 1024", b"[" * 1025 + b"]" * 1025, "[0][0][0]", DEEP_ARRAY),
    (
        "nesting inside an instance",
        v1('{"x": 1}', '{"y": ' + "[" * 40 + "]" * 40 + "}"),
        "instances[1].y[0][0]",
        DEEP_ARRAY,
    ),
    (
        "200k-digit integer",
        v1('{"amount": ' + "9" * 200_000 + "}"),
        "instances[0].amount",
        "number literal of 200000 characters exceeds the limit of 40",
    ),
    ("200k-digit integer alone", b"1" * 200_000, "body", "number literal of 200000"),
    (
        "5000-digit float",
        v1('{"a": 1}', '{"amount": 0.' + "3" * 4998 + "}"),
        "instances[1].amount",
        "number literal of 5000 characters",
    ),
    (
        "1e999",
        v1('{"a": 1}', '{"a": 1e999}'),
        "instances[1].a",
        "number 1e999 is out of range for a 64-bit float",
    ),
    ("-1e999", b"[1, -1e999]", "[1]", "out of range for a 64-bit float"),
    ("NaN", v1('{"a": NaN}'), "instances[0].a", "NaN and Infinity are not JSON numbers"),
    ("Infinity", b'{"a": Infinity}', "a", "NaN and Infinity are not JSON numbers"),
    ("-Infinity", b"[-Infinity]", "[0]", "NaN and Infinity are not JSON numbers"),
    (
        "invalid UTF-8",
        b'{"instances": [{"name": "caf\xe9"}]}',
        "instances[0].name",
        "invalid UTF-8 at byte 28",
    ),
    ("overlong UTF-8", b'["\xc0\xaf"]', "[0]", "invalid UTF-8 at byte 2"),
    ("UTF-8-encoded surrogate", b'["\xed\xa0\x80"]', "[0]", "invalid UTF-8 at byte 2"),
    ("UTF-16 LE with BOM", '{"instances": []}'.encode("utf-16"), "body", "UTF-16 LE"),
    ("UTF-16 BE with BOM", b"\xfe\xff" + '{"a": 1}'.encode("utf-16-be"), "body", "UTF-16 BE"),
    ("UTF-32 with BOM", '{"a": 1}'.encode("utf-32"), "body", "UTF-32"),
    ("UTF-16 without BOM", '{"a": 1}'.encode("utf-16-le"), "body", "UTF-16 or UTF-32"),
    (
        "lone high surrogate escape",
        v1('{"name": "\\ud800"}'),
        "instances[0].name",
        "surrogate",
    ),
    ("lone low surrogate escape", b'["\\udc00x"]', "[0]", "surrogate"),
    ("100k keys in one object", keys(100_000).encode(), "body", "more than 1024 keys"),
    ("2000 keys in an instance", v1('{"a": 1}', keys(2000)), "instances[1]", "more than 1024"),
    (
        "huge string",
        v1('{"text": "' + "a" * ((1 << 20) + 1) + '"}'),
        "instances[0].text",
        "string of 1048577 bytes exceeds the limit of 1048576",
    ),
    ("truncated", v1('{"a": 1}', '{"b": ')[:-2], "instances[1].b", "unexpected end of data"),
    ("truncated in a string", b'{"instances": [{"a": "ab', "instances[0].a", "not valid JSON"),
    ("trailing garbage", b'{"instances": []} x', "body", "unexpected content after document"),
    ("single quotes", b"{'instances': []}", "body", "not valid JSON at line 1 column 2"),
    ("trailing comma", b"[1, 2, ]", "[1]", "trailing comma"),
    ("control character in a string", b'{"a": "x\x01"}', "a", "control character"),
    ("NUL byte", b"\x00", "body", "UTF-16 or UTF-32"),
    ("a million and one items", b"[" + b"0," * 1_000_000 + b"0]", "body", "1000001 array"),
]


@pytest.mark.parametrize(
    "body,field,reason", [case[1:] for case in HOSTILE], ids=[case[0] for case in HOSTILE]
)
def test_hostile_bodies_are_bad_requests_naming_field_and_reason(
    body: bytes, field: str, reason: str
) -> None:
    error = refused(body)
    detail = error.details[0]
    assert detail["field"].startswith(field), detail
    assert reason in detail["reason"], detail
    assert reason in error.message or detail["field"] in error.message


def test_stdlib_json_fails_the_corpus_in_ways_that_were_500s() -> None:
    # The reason for this module: these escape stdlib json as non-ValueError or not at all.
    with pytest.raises(RecursionError):
        json.loads(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(ValueError, match="integer string conversion"):
        json.loads(b"9" * 200_000)
    assert json.loads(b"1e999") == float("inf")


@pytest.mark.parametrize("body", [b"", b"   ", b" \r\n\t ", b"\xef\xbb\xbf", b"\xef\xbb\xbf \n"])
def test_empty_and_whitespace_bodies(body: bytes) -> None:
    error = refused(body)
    assert error.message == EMPTY_MESSAGE
    assert error.details == [{"field": "body", "reason": "empty"}]


def test_the_error_crosses_a_process_boundary() -> None:
    error = refused(b"[" * 2048)
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), copy.message, copy.details) == (BadRequest, error.message, error.details)


# --- valid bodies --------------------------------------------------------------------------


def v1_body(n: int) -> bytes:
    instances = [
        {
            "amount": 12.5 + i,
            "age": 30 + i % 40,
            "score": -0.25 * i,
            "merchant": ["grocery", "fuel", "travel"][i % 3],
            "country": "DE",
            "is_new": i % 2 == 0,
            "hour": i % 24,
            "ratio": 1 / (i + 1),
            "channel": None,
            "note": 'café "quoted" [x]: {y}, \\ \n \u2603',
        }
        for i in range(n)
    ]
    return json.dumps({"instances": instances}).encode()


VALID = [
    v1_body(1),
    v1_body(60),
    json.dumps(
        {
            "id": "r1",
            "inputs": [
                {"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[1.0, 2.5], [3, 4]]},
                {"name": "s", "shape": [1], "datatype": "BYTES", "data": ["a,b:c]"]},
            ],
        }
    ).encode(),
    json.dumps({"instances": [{"t": "é ☃ 😀"}]}, ensure_ascii=False).encode(),
    json.dumps({"instances": [{"t": "é ☃ 😀"}]}, ensure_ascii=True).encode(),
    b'{"a": [], "b": {}, "c": [[], [{}]], "d": "", "e": "\\"\\\\\\"", "f": "\\\\"}',
    b'"just a string"',
    b"42",
    b"-0.0",
    b"null",
    b"[true, false, null]",
    b'  \r\n\t{ "a" : [ 1 , 2 ] }  \n',
    b"[" * 32 + b"]" * 32,  # exactly max_depth
    keys(1024).encode(),  # exactly max_keys_per_object
    b"[0." + b"1" * 38 + b", -" + b"2" * 34 + b".0e+1]",  # max_number_chars, twice
    b'["' + b"0" * 100 + b'", "' + b"-" * 60 + b'", "1e5' * 20 + b'"]',  # digits in strings
    b'{"big": 18446744073709551615, "small": -9223372036854775808}',
]


@pytest.mark.parametrize("body", VALID, ids=range(len(VALID)))
def test_valid_bodies_decode_like_stdlib_json(body: bytes) -> None:
    assert parse_json(body) == json.loads(body)


def test_byte_order_mark_bytearray_and_memoryview() -> None:
    body = v1_body(3)
    expected = json.loads(body)
    assert parse_json(b"\xef\xbb\xbf" + body) == expected
    assert parse_json(bytearray(body)) == expected
    assert parse_json(memoryview(body)) == expected


def test_integers_past_64_bits_decode_as_the_nearest_float() -> None:
    # orjson's choice, and what a JavaScript client reads; the literal is still bounded.
    value = parse_json(b"[18446744073709551616, -9223372036854775809, 123456789012345678901]")
    assert value == [2.0**64, -(2.0**63), 1.2345678901234568e20]
    assert all(type(v) is float for v in value)


def test_limits_are_configurable_and_exact() -> None:
    limits = JsonLimits(
        max_depth=3,
        max_number_chars=5,
        max_string_bytes=4,
        max_keys_per_object=2,
        max_items_total=6,
    )
    assert parse_json(b'[[{"a": 12345, "bc": "abcd"}]]', limits)
    detail = refused(b"[[[[]]]]", limits).details[0]
    assert detail == {"field": "[0][0][0]", "reason": "nesting deeper than the limit of 3"}
    detail = refused(b'{"a": [1, 123456]}', limits).details[0]
    assert detail["field"] == "a[1]" and "number literal of 6 characters" in detail["reason"]
    detail = refused(b'{"a": ["abcde"]}', limits).details[0]
    assert detail["field"] == "a[0]" and "string of 5 bytes" in detail["reason"]
    detail = refused(b'{"abcde": 1}', limits).details[0]
    assert detail["field"] == "abcde" and "key of 5 bytes" in detail["reason"]
    detail = refused(b'[{"a": 1}, {"a": 1, "b": 2, "c": 3}]', limits).details[0]
    assert detail == {"field": "[1]", "reason": "object has more than 2 keys"}
    detail = refused(b"[1, 2, 3, 4, 5, 6, 7]", limits).details[0]
    assert detail["field"] == "body" and "7 array elements" in detail["reason"]
    # Escapes count as written: "\u00e9" is 6 bytes.
    refused(b'["\\u00e9"]', limits)
    assert parse_json('["éé"]'.encode(), limits) == ["éé"]


def test_keys_that_are_not_identifiers_are_quoted_in_the_field() -> None:
    limits = JsonLimits(max_depth=2)
    detail = refused(b'{"a.b": {"c d": [1]}}', limits).details[0]
    assert detail["field"] == '["a.b"]["c d"]'


@pytest.mark.parametrize(
    "kwargs",
    [{"max_depth": 0}, {"max_depth": 1025}, {"max_items_total": 0}, {"max_string_bytes": -1}],
)
def test_limits_refuse_nonsense(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        JsonLimits(**kwargs)


# --- properties ----------------------------------------------------------------------------

TOKENS = st.sampled_from(
    [b"[", b"]", b"{", b"}", b'"', b"\\", b":", b",", b" ", b"0", b"12", b"-", b".", b"e9"]
    + [b"1e999", b"NaN", b"true", b"null", b'"a"', b'"k":', b"\\u", b"\\ud800", b"\\n"]
    + [b"\xff", b"\xc3\xa9", b"\xed\xa0\x80", b"\x00", b"\xef\xbb\xbf", b"\xfe\xff"]
    + [b"[" * 40, b"]" * 40, b"9" * 50, b'"' + b"x" * 50 + b'"']
)
SMALL = JsonLimits(
    max_depth=4,
    max_number_chars=8,
    max_string_bytes=16,
    max_keys_per_object=3,
    max_items_total=24,
)


def oracle(body: bytes) -> object:
    """stdlib json, reading integers as orjson does (past 64 bits: the nearest float)."""

    def integer(literal: str) -> int | float:
        value = int(literal)
        return value if -(2**63) <= value < 2**64 else float(value)

    return json.loads(body, parse_int=integer)


def only_bad_requests(body: bytes, limits: JsonLimits) -> None:
    try:
        value = parse_json(body, limits)
    except BadRequest as error:
        assert error.details and all(d["field"] and d["reason"] for d in error.details)
    else:
        assert value == oracle(body)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_arbitrary_bytes_give_a_value_or_bad_request(body: bytes) -> None:
    only_bad_requests(body, DEFAULT_LIMITS)
    only_bad_requests(body, SMALL)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(TOKENS, max_size=60).map(b"".join))
def test_json_like_bytes_give_a_value_or_bad_request(body: bytes) -> None:
    only_bad_requests(body, DEFAULT_LIMITS)
    only_bad_requests(body, SMALL)


TEXT = st.text(
    st.sampled_from('ab[]{}:,"\\/\n\té☃😀0123456789-.eE')
    | st.characters(exclude_categories=["Cs"]),
    max_size=12,
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT
)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(TEXT, children, max_size=5),
    max_leaves=25,
)


def measure(value: object, ensure_ascii: bool) -> dict[str, int]:
    """What each limit sees in `value` once json.dumps has written it."""
    seen = dict.fromkeys(["depth", "items", "keys", "number", "string"], 0)

    def walk(value: object, depth: int) -> None:
        if isinstance(value, str):
            literal = len(json.dumps(value, ensure_ascii=ensure_ascii).encode()) - 2
            seen["string"] = max(seen["string"], literal)
        elif isinstance(value, bool) or value is None:
            pass
        elif isinstance(value, int | float):
            seen["number"] = max(seen["number"], len(json.dumps(value)))
        else:
            assert isinstance(value, list | dict)
            seen["depth"] = max(seen["depth"], depth)
            seen["items"] += len(value)
            if isinstance(value, dict):
                seen["keys"] = max(seen["keys"], len(value))
                for key in value:
                    walk(key, depth + 1)
            for member in value.values() if isinstance(value, dict) else value:
                walk(member, depth + 1)

    walk(value, 1)
    return seen


def breaks(value: object, ensure_ascii: bool, limits: JsonLimits) -> bool:
    seen = measure(value, ensure_ascii)
    return (
        seen["depth"] > limits.max_depth
        or seen["number"] > limits.max_number_chars
        or seen["string"] > limits.max_string_bytes
        or seen["keys"] > limits.max_keys_per_object
        or seen["items"] > limits.max_items_total
    )


def test_measure_counts_items_over_the_whole_document() -> None:
    seen = measure({"a": [1, [2, 3]], "b": {}}, True)
    assert seen == {"depth": 3, "items": 6, "keys": 2, "number": 1, "string": 1}


LIMITS = st.builds(
    JsonLimits,
    max_depth=st.integers(1, 6),
    max_number_chars=st.integers(1, 30),
    max_string_bytes=st.integers(1, 40),
    max_keys_per_object=st.integers(1, 5),
    max_items_total=st.integers(1, 30),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(VALUES, LIMITS, st.booleans(), st.sampled_from([None, 1, "\t"]))
def test_limits_are_exact_on_valid_json(
    value: object, limits: JsonLimits, ensure_ascii: bool, indent: int | str | None
) -> None:
    """The bytes checks refuse exactly the documents that break a limit, no more, no less."""
    body = json.dumps(value, ensure_ascii=ensure_ascii, indent=indent).encode()
    if breaks(value, ensure_ascii, limits):
        refused(body, limits)
    else:
        assert parse_json(body, limits) == value


# --- cost ----------------------------------------------------------------------------------

MEGABYTE_OF_TROUBLE = {
    "escaped quotes": b'"' + b'\\"' * 500_000,
    "escaped quotes in an array": b'["' + b'\\",' * 330_000,
    "quotes": b'"' * 1_000_000,
    "error at the end": b"[" + b"0," * 500_000 + b"x]",
    "empty arrays": b"[" + b"[]," * 330_000 + b"[]]",
    "brackets in strings": b"[" + b'"[{:",' * 160_000 + b"1]",
    "long number at the end": b"[" + b"0," * 450_000 + b"1" * 100 + b"]",
    "keys at the end": b'{"a":[' + b"0," * 300_000 + b"0]," + keys(2000)[1:].encode(),
    "backslashes": b'["' + b"\\\\" * 500_000 + b'"]',
    "valid v1": v1_body(3000),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("body", MEGABYTE_OF_TROUBLE.values(), ids=list(MEGABYTE_OF_TROUBLE.keys()))
def test_a_megabyte_costs_linear_time(body: bytes) -> None:
    # Quadratic work on a megabyte takes minutes; linear takes milliseconds. The bound is
    # loose so that a loaded machine does not fail it.
    started = time.perf_counter()
    with contextlib.suppress(BadRequest):
        parse_json(body)
    assert time.perf_counter() - started < 5.0


def test_a_limit_broken_past_the_naming_budget_is_still_named() -> None:
    detail = refused(MEGABYTE_OF_TROUBLE["long number at the end"]).details[0]
    assert detail == {
        "field": "body",
        "reason": "a number literal exceeds the limit of 40 characters",
    }
    detail = refused(MEGABYTE_OF_TROUBLE["keys at the end"]).details[0]
    assert detail == {"field": "body", "reason": "an object has more than 1024 keys"}


def test_items_are_counted_only_where_separators_could_exceed_the_limit(monkeypatch) -> None:
    from deployments.protocol import json_body

    def fail(*_: object) -> None:
        raise AssertionError("counted items exactly for a body with few separators")

    monkeypatch.setattr(json_body, "_check_items", fail)
    body = json.dumps({"instances": [{"text": "x" * 600_000}, {"text": "y" * 500_000}]})
    assert len(body) > DEFAULT_LIMITS.max_items_total
    parse_json(body.encode(), JsonLimits(max_string_bytes=1 << 21))


# --- responses -----------------------------------------------------------------------------


def test_response_bytes_encode_numpy() -> None:
    out = json_response_bytes(
        {
            "predictions": np.array([0.1, 0.2, 1.0], dtype=np.float32),
            "matrix": np.arange(6, dtype=np.float32).reshape(2, 3).T,  # not C-contiguous
            "ids": np.array([1, 2], dtype=np.int64),
            "half": np.array([0.5], dtype=np.float16),
            "flags": np.array([True, False]),
            "labels": np.array(["fraud", "ok"]),
            "score": np.float32(0.25),
            "count": np.int64(7),
            "plain": [1, "a", None, True, 2.5],
        }
    )
    assert isinstance(out, bytes)
    assert json.loads(out) == {
        "predictions": [0.1, 0.2, 1.0],
        "matrix": [[0.0, 3.0], [1.0, 4.0], [2.0, 5.0]],
        "ids": [1, 2],
        "half": [0.5],
        "flags": [True, False],
        "labels": ["fraud", "ok"],
        "score": 0.25,
        "count": 7,
        "plain": [1, "a", None, True, 2.5],
    }


def test_response_bytes_round_trip_and_refusals() -> None:
    body = v1_body(5)
    assert parse_json(json_response_bytes(json.loads(body))) == json.loads(body)
    assert json_response_bytes({"x": float("nan"), "y": np.array([np.inf])}) == (
        b'{"x":null,"y":[null]}'
    )
    with pytest.raises(TypeError):
        json_response_bytes({"x": object()})
    with pytest.raises(TypeError):
        json_response_bytes({1: "non-str key"})
