"""Data contract: specs, loaders with precise errors, splits, padding, the demo benchmark."""
from cotrr_core.data.dataset import PaddedLists, RankingData, build_ranking_data
from cotrr_core.data.errors import DataError, LoadReport
from cotrr_core.data.loaders import FORMATS, infer_format, load_dataset
from cotrr_core.data.spec import FeatureSpec, TokenSpec, builtin_spec, default_letor_spec
from cotrr_core.data.splits import DEFAULT_FRACTIONS, split_queries

__all__ = [
    "DataError", "LoadReport", "FeatureSpec", "TokenSpec", "builtin_spec", "default_letor_spec",
    "RankingData", "PaddedLists", "build_ranking_data", "load_dataset", "infer_format", "FORMATS",
    "split_queries", "DEFAULT_FRACTIONS",
]
