"""The built-in cocktail benchmark (text -> image), generated, never downloaded.

catalogue (cocktails, glasses, colours) -> scenes (queries and candidate image specs, compliance)
-> render (64x64 images) -> features (visual statistics and conflict signals measured from pixels)
-> generate (CLIP-like embeddings, the Step5 frame, the parquet cache and JSONL export).
"""
from cotrr_core.data.demo.generate import (
                                           COLUMNS,
                                           SIZES,
                                           VECTOR_COLUMNS,
                                           demo_cache_path,
                                           generate_demo_frame,
                                           read_demo_frame,
                                           render_candidate_image,
                                           tile_demo_frame,
                                           write_demo_jsonl,
                                           write_demo_parquet,
)

__all__ = ["SIZES", "COLUMNS", "VECTOR_COLUMNS", "generate_demo_frame", "tile_demo_frame", "render_candidate_image",
           "demo_cache_path", "read_demo_frame", "write_demo_parquet", "write_demo_jsonl"]
