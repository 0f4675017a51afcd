"""ResultCache: a byte bound, TTL on an injected clock, and auto-off for unique traffic.

No Ray and no sleeps: time is a fake clock the tests move by hand.
"""

from __future__ import annotations

import ast
import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deployments.admission.resilience import ResultCache, estimate_bytes

MB = 1_000_000


@dataclass
class Prediction:
    """Same fields as deployments.roles.dataplane.Prediction, whose import brings in Ray."""

    outputs: dict[str, Any]
    model_version: str
    infer_ms: float


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def embedding(rows: int = 1000) -> Prediction:
    return Prediction({"embedding": np.zeros((rows, 384), dtype=np.float32)}, "1", 3.5)


def small(i: int = 0) -> Prediction:
    return Prediction({"score": np.array([float(i)])}, "1", 0.1)


def cache(mode: str = "on", max_bytes: int = 10 * MB, **kw: Any) -> tuple[ResultCache, FakeClock]:
    clock = FakeClock()
    return ResultCache(mode, 30.0, max_bytes, clock=clock, **kw), clock  # type: ignore[arg-type]


# ---- estimate_bytes -------------------------------------------------------------------


def test_estimate_of_an_embedding_is_its_nbytes() -> None:
    array = np.zeros((1000, 384), dtype=np.float32)
    assert array.nbytes == 1_536_000
    assert 1_536_000 <= estimate_bytes(array) < 1_537_000
    assert 1_536_000 <= estimate_bytes(embedding()) < 1_540_000


def test_estimate_of_lists_and_strings_grows_with_them() -> None:
    words = ["x" * 100] * 10_000
    assert estimate_bytes(words) >= 10_000 * 100
    assert estimate_bytes(list(range(100_000))) >= 100_000 * 28
    # An object array counts its strings, not just its pointers.
    strings = np.array(["y" * 1000] * 100, dtype=object)
    assert estimate_bytes(strings) >= 100 * 1000
    assert estimate_bytes(Prediction({"label": ["a"] * 50}, "1", 0.0)) > estimate_bytes(
        Prediction({"label": []}, "1", 0.0)
    )


def test_estimate_never_raises_on_odd_values() -> None:
    class BadSizeof:
        def __sizeof__(self) -> int:
            raise RuntimeError("no size")

    class BadList(list):  # type: ignore[type-arg]
        def __getitem__(self, i: Any) -> Any:
            raise RuntimeError("no items")

    cyclic: list[Any] = []
    cyclic.append(cyclic)
    odd = [
        None,
        object(),
        BadSizeof(),
        BadList(range(100)),
        cyclic,
        {"nested": {"deeper": [[{"x": (1, 2)}]]}},
        {i: str(i) for i in range(1000)},
        {1, 2, 3},
        (x for x in range(3)),
        lambda: 0,
        Prediction,
        np.float32(1.0),
        np.zeros((0, 384), dtype=np.float32),
        np.zeros((3, 3))[:, 1],
        Prediction(None, None, None),  # type: ignore[arg-type]
    ]
    for value in odd:
        size = estimate_bytes(value)
        assert isinstance(size, int) and size > 0


# ---- the byte bound -------------------------------------------------------------------


def test_large_entries_are_bounded_by_bytes() -> None:
    results, _ = cache(max_bytes=10 * MB)
    for i in range(50):
        results.put(f"k{i}", embedding())
        assert results.bytes_used <= 10 * MB
    # ~1.54 MB each: six fit in 10 MB, and the ones kept are the most recent.
    assert len(results) == 6
    assert results.get("k49") is not None and results.get("k0") is None


def test_many_small_entries_fit() -> None:
    results, _ = cache(max_bytes=2 * MB)
    for i in range(1000):
        results.put(f"k{i}", small(i))
    assert len(results) == 1000
    assert 0 < results.bytes_used <= 2 * MB
    assert results.get("k0").outputs["score"][0] == 0.0  # type: ignore[union-attr]


def test_a_value_bigger_than_the_cache_is_not_stored() -> None:
    results, _ = cache(max_bytes=1 * MB)
    results.put("small", small())
    results.put("big", embedding())  # 1.54 MB > 1 MB: skipped, no ValueError
    assert results.get("big") is None
    assert results.get("small") is not None and len(results) == 1


def test_views_are_stored_as_copies_of_their_own_rows() -> None:
    batch = np.ones((10_000, 384), dtype=np.float32)  # a whole batch's outputs: 15 MB
    answer = Prediction({"embedding": batch[:10]}, "1", 1.0)
    results, _ = cache(max_bytes=1 * MB)
    results.put("k", answer)
    stored = results.get("k")
    assert stored is not None and stored.outputs["embedding"].base is None
    np.testing.assert_array_equal(stored.outputs["embedding"], batch[:10])
    assert results.bytes_used < 20_000  # charged for its rows, and pins no more than them
    assert answer.outputs["embedding"].base is batch  # the caller's answer is untouched


# ---- TTL --------------------------------------------------------------------------------


def test_entries_expire_on_the_clock() -> None:
    results, clock = cache()
    results.put("a", small())
    clock.advance(29.9)
    assert results.get("a") is not None
    clock.advance(0.2)
    assert results.get("a") is None
    assert len(results) == 0 and results.bytes_used == 0
    assert (results.hits, results.misses) == (1, 1)


# ---- modes ------------------------------------------------------------------------------


def test_off_never_stores() -> None:
    results, _ = cache("off")
    assert not results.enabled and results.state == "off"
    results.put("a", small())
    assert results.get("a") is None
    assert len(results) == 0 and (results.hits, results.misses) == (0, 0)


def test_setting_mode_off_clears_and_on_again_starts_empty() -> None:
    results, _ = cache("on")
    results.put("a", small())
    results.mode = "off"
    assert len(results) == 0 and not results.enabled
    results.mode = "on"
    assert results.enabled and results.get("a") is None
    with pytest.raises(ValueError):
        results.mode = "sometimes"  # type: ignore[assignment]


def test_auto_turns_off_for_unique_keys_and_back_on_after_the_pause() -> None:
    results, clock = cache("auto", probe_lookups=100, pause_s=60.0)
    assert results.enabled and results.state == "on"
    for i in range(100):
        assert results.enabled
        assert results.get(f"unique{i}") is None
        results.put(f"unique{i}", small(i))
    assert not results.enabled and results.state == "paused"
    assert len(results) == 0 and results.bytes_used == 0
    results.put("x", small())  # paused: stores and counts nothing
    assert results.get("x") is None and results.misses == 100
    results.mode = "auto"  # a config push with the same mode does not end the pause
    assert results.state == "paused"
    clock.advance(59.9)
    assert not results.enabled
    clock.advance(0.1)
    assert results.enabled and results.state == "on"
    results.put("x", small())
    assert results.get("x") is not None


def test_auto_keeps_a_cache_that_hits() -> None:
    results, _ = cache("auto", probe_lookups=100)
    for i in range(1000):
        key = f"k{i % 10}"
        if results.get(key) is None:
            results.put(key, small(i))
    assert results.enabled and results.state == "on" and len(results) == 10
    assert (results.hits, results.misses) == (990, 10)


def test_auto_pauses_just_under_the_hit_ratio() -> None:
    results, _ = cache("auto", probe_lookups=100, min_hit_ratio=0.05)
    results.put("hot", small())
    for i in range(100):
        results.get("hot" if i < 4 else f"cold{i}")  # 4% hits
    assert results.state == "paused"


def test_on_ignores_the_hit_ratio() -> None:
    results, _ = cache("on", probe_lookups=10)
    for i in range(100):
        results.get(f"unique{i}")
    assert results.enabled and results.state == "on"


# ---- keys and arguments -------------------------------------------------------------------


def test_key_is_canonical_and_versioned() -> None:
    a = ResultCache.key("m", "1", [{"x": 1, "y": 2}])
    assert a == ResultCache.key("m", "1", [{"y": 2, "x": 1}])
    assert a != ResultCache.key("m", "2", [{"x": 1, "y": 2}])
    assert len(a) == 64 and sys.getsizeof(a) < 200


@pytest.mark.parametrize(
    "kw",
    [
        {"ttl_s": 0},
        {"max_bytes": 0},
        {"min_hit_ratio": 1.5},
        {"probe_lookups": 0},
        {"pause_s": -1},
        {"mode": "maybe"},
    ],
)
def test_bad_arguments_are_refused(kw: dict[str, Any]) -> None:
    args = {"mode": "auto", "ttl_s": 30.0, "max_bytes": MB, **kw}
    with pytest.raises(ValueError):
        ResultCache(
            args.pop("mode"),
            args.pop("ttl_s"),
            args.pop("max_bytes"),
            **args,
        )


def test_prediction_fields_match_the_dataplane() -> None:
    # Read, not imported: importing the dataplane imports Ray.
    source = (Path(__file__).parents[2] / "deployments/roles/dataplane.py").read_text()
    (real,) = [
        node
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ClassDef) and node.name == "Prediction"
    ]
    names = [s.target.id for s in real.body if isinstance(s, ast.AnnAssign)]  # type: ignore[union-attr]
    assert names == [f.name for f in dataclasses.fields(Prediction)]
