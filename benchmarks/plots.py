"""PNG plots for benchmark reports (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI

import matplotlib.pyplot as plt  # noqa: E402 - after the backend is chosen


def plot_timeline(
    path: Path,
    replicas: list[tuple[float, int]],
    windows: list[dict[str, Any]],
    load_start_s: float,
    load_end_s: float,
    summary: dict[str, Any],
    deployment: str = "ModelReplica-fraud-risk",
) -> Path:
    """Replicas of `deployment`, offered load and throughput, latency: three panels sharing
    the time axis."""
    fig, (ax_rep, ax_load, ax_lat) = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    ts, ns = zip(*replicas, strict=True) if replicas else ((), ())
    ax_rep.step(ts, ns, where="post", color="tab:purple")
    ax_rep.set_ylabel(f"{deployment}\nRUNNING")
    ax_rep.set_ylim(0, max(ns or (1,)) + 1)
    ax_rep.yaxis.get_major_locator().set_params(integer=True)

    mids = [w["t_s"] + w.get("window_s", 2) / 2 for w in windows]
    ax_load.plot(mids, [w["rps"] for w in windows], marker="o", ms=3, label="answered req/s")
    ax_load.set_ylabel("requests/s")
    ax_conn = ax_load.twinx()
    ax_conn.step(
        [0, load_start_s, load_end_s, max(ts or (load_end_s,))],
        [0, summary["connections"], 0, 0],
        where="post",
        color="tab:gray",
        linestyle="--",
        label="offered: connections",
    )
    ax_conn.set_ylabel("connections")
    ax_load.legend(loc="upper left")
    ax_conn.legend(loc="upper right")

    ax_lat.plot(mids, [w["p50_ms"] for w in windows], marker="o", ms=3, label="p50")
    ax_lat.plot(mids, [w["p99_ms"] for w in windows], marker="o", ms=3, label="p99")
    ax_lat.set_ylabel("latency ms")
    ax_lat.set_xlabel("seconds since start")
    ax_lat.legend(loc="upper right")
    for ax in (ax_rep, ax_load, ax_lat):
        ax.axvspan(load_start_s, load_end_s, color="tab:orange", alpha=0.08)
        ax.grid(alpha=0.3)
    up, down = summary.get("second_replica_after_s"), summary.get("back_to_one_after_s")
    fig.suptitle(
        "Autoscaling on live load: 2nd replica after "
        f"{'-' if up is None else f'{up:.1f}'} s, back to one "
        f"{'-' if down is None else f'{down:.1f}'} s after the load stopped"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_xy(
    path: Path,
    title: str,
    xlabel: str,
    ylabel: str,
    series: dict[str, tuple[list[float], list[float]]],
    logy: bool = False,
) -> Path:
    """One line per series: e.g. throughput against concurrency, latency against load."""
    fig, ax = plt.subplots(figsize=(8, 5))
    # compare plots more systems than the 10 colours of the default cycle: past them, the
    # next line style, so that no two lines look alike.
    styles = ("-", "--", ":", "-.")
    for i, (name, (xs, ys)) in enumerate(series.items()):
        ax.plot(xs, ys, marker="o", linestyle=styles[i // 10 % len(styles)], label=name)
    if logy:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the axes
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
