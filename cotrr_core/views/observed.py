"""What served traffic did, from `cotrr_core serve` decision logs: arm sizes with the SRM test, shadow agreement,
latency by arm, fallbacks over time and, with a click log joined by request id, CTR and success lift.

Every statistic is the simulator's own (cotrr_core.simulate.stats): srm_check, kendall_tau_ranks,
latency_percentiles, clustered_diff (two-way clustered by unit and query).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cotrr_core.data.errors import DataError
from cotrr_core.serving.decision_log import read_decisions
from cotrr_core.simulate.stats import clustered_diff, kendall_tau_ranks, latency_percentiles, srm_check

__all__ = ["ObservedView", "observed_view", "expected_treatment_share", "shadow_agreement"]


@dataclass
class ObservedView:
    """served: one row per served request; rejected: count of refused requests; arms: requests and units per
    arm; srm: srm_check's answer; shadow: top-1 change rate and Kendall tau (None without would-be orders);
    latency: percentiles per arm; fallbacks: counts per time bucket and reason; lifts: metric ->
    clustered_diff (None without a click log)."""

    served: pd.DataFrame
    rejected: int
    arms: pd.DataFrame
    expected_share: float
    srm: dict
    shadow: dict | None
    latency: pd.DataFrame
    fallbacks: pd.DataFrame
    lifts: dict | None


def expected_treatment_share(mode: str, share: float) -> float:
    """The treatment share the policy intends: rollout -> share, full -> 1, off and shadow -> 0."""
    return {"rollout": float(share), "full": 1.0}.get(mode, 0.0)


def shadow_agreement(served: list[list], wouldbe: list[list]) -> dict:
    """Top-1 change rate and Kendall tau (mean, median) between each request's served and would-be orders (ids)."""
    n = np.array([len(s) for s in served])
    width = int(n.max()) if len(n) else 0
    rank_a, rank_b = np.zeros((len(n), width)), np.zeros((len(n), width))
    for q, (s, w) in enumerate(zip(served, wouldbe)):
        pos = {c: i for i, c in enumerate(w)}
        rank_a[q, :len(s)] = np.arange(len(s))
        rank_b[q, :len(s)] = [pos[c] for c in s]
    tau = kendall_tau_ranks(rank_a, rank_b, n)
    top1 = np.array([bool(s) and s[0] != w[0] for s, w in zip(served, wouldbe)])
    return {"requests": len(n), "top1_change_rate": float(top1.mean()) if len(n) else math.nan,
            "kendall_tau_mean": float(tau.mean()) if len(n) else math.nan,
            "kendall_tau_median": float(np.median(tau)) if len(n) else math.nan}


def observed_view(path: str | Path, clicks: str | Path | None = None, buckets: int = 20) -> ObservedView:
    """The Observed view of a decision log file or folder, and optionally a click log (JSONL lines with
    request_id, clicked and, optionally, success)."""
    records = read_decisions(path)
    df = pd.DataFrame(records)
    if "arm" not in df:
        raise DataError(str(path), None, "arm", "no served request in this log (only rejections)")
    served = df[df["arm"].notna()].reset_index(drop=True)
    served["unit"] = served["unit_id"].where(served["unit_id"].notna(), "request:" + served["request_id"])
    arms = _arm_sizes(served)
    mode = str(served["mode"].mode().iloc[0]) if "mode" in served else "full"
    share = float(served["share"].dropna().iloc[0]) if "share" in served and served["share"].notna().any() else 0.0
    expected = expected_treatment_share(mode, share)
    srm = srm_check(int(arms.loc["control", "units"]), int(arms.loc["treatment", "units"]), expected)
    shadow = None
    if "wouldbe" in served and served["wouldbe"].notna().any():
        both = served[served["wouldbe"].notna()]
        shadow = shadow_agreement(list(both["served"]), list(both["wouldbe"]))
    latency = pd.DataFrame({arm: latency_percentiles(g["latency_ms"]) for arm, g in served.groupby("arm")}).T
    return ObservedView(served=served, rejected=int(len(df) - len(served)), arms=arms, expected_share=expected,
                        srm=srm, shadow=shadow, latency=latency, fallbacks=_fallbacks(served, buckets),
                        lifts=_lifts(served, clicks) if clicks else None)


def _arm_sizes(served: pd.DataFrame) -> pd.DataFrame:
    sizes = served.groupby("arm").agg(requests=("request_id", "size"), units=("unit", "nunique"))
    return sizes.reindex(["control", "treatment"], fill_value=0)


def _fallbacks(served: pd.DataFrame, buckets: int) -> pd.DataFrame:
    """Requests per time bucket (seconds since the first) and outcome (the fallback reason, or "none")."""
    t = served["time"] - served["time"].min()
    width = max(1.0, float(t.max()) / buckets) if len(t) else 1.0
    reason = served["fallback_reason"].fillna("none")
    out = pd.DataFrame({"since_start_s": (t // width) * width, "reason": reason})
    return out.groupby(["since_start_s", "reason"]).size().rename("requests").reset_index()


def _lifts(served: pd.DataFrame, clicks: str | Path) -> dict:
    """CTR and success per request (any click / a click marked success), treatment minus control, clustered."""
    rows = []
    with open(clicks, encoding="utf-8") as fh:
        for i, line in enumerate(fh, start=1):
            if line.strip():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(str(clicks), i, None, f"not a JSON line ({exc.msg})") from None
                if not isinstance(rec, dict) or "request_id" not in rec:
                    raise DataError(str(clicks), i, "request_id", "each click line needs a request_id")
                rows.append(rec)
    c = pd.DataFrame(rows)
    per = c.groupby("request_id").agg(ctr=("clicked", "max"),
                                      success=("success", "max") if "success" in c else ("clicked", "max"))
    joined = served.join(per, on="request_id")
    joined[["ctr", "success"]] = joined[["ctr", "success"]].fillna(0).astype(float)
    query = joined["query_key"] if "query_key" in joined else pd.Series("all", index=joined.index)
    treated = (joined["arm"] == "treatment").to_numpy()
    return {m: clustered_diff(joined[m].to_numpy(), treated, joined["unit"].to_numpy(), query.fillna("").to_numpy())
            for m in ("ctr", "success")}
