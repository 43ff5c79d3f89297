"""Offline simulation of rolling the reranker out: clicks, A/B tests, ramps,
shadow mode and the top-M trade-off. Pure functions on measured arrays."""
from cotrr_core.simulate.ab import ABResult, RampResult, served_ndcg, simulate_ab, simulate_ramp
from cotrr_core.simulate.clicks import ClickModel, attractiveness, cascade_clicks, pbm_clicks
from cotrr_core.simulate.shadow import ShadowResult, latency_overhead, shadow_analysis
from cotrr_core.simulate.stats import (
                                       minimum_detectable_effect,
                                       required_sample_size,
                                       srm_check,
                                       two_proportion_test,
                                       welch_ttest_mean,
)
from cotrr_core.simulate.topm import DEFAULT_PRICE_PER_CPU_SECOND, recommend_m, topm_tradeoff

__all__ = [
    "ABResult",
    "ClickModel",
    "DEFAULT_PRICE_PER_CPU_SECOND",
    "RampResult",
    "ShadowResult",
    "attractiveness",
    "cascade_clicks",
    "latency_overhead",
    "minimum_detectable_effect",
    "pbm_clicks",
    "recommend_m",
    "required_sample_size",
    "served_ndcg",
    "shadow_analysis",
    "simulate_ab",
    "simulate_ramp",
    "srm_check",
    "topm_tradeoff",
    "two_proportion_test",
    "welch_ttest_mean",
]
