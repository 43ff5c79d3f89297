"""CoTRR-Stable: train, inspect and safely roll out a calibrated cross-attention reranker."""
__version__ = "0.1.0"

__all__ = ["__version__"]
