"""Prediction and segmentation engine (no Qt, no napari): tiled affinity prediction, fragments,
waterz agglomeration, mutex watershed, blockwise/distributed segmentation and evaluation."""

from .agglomerate import (
    DEFAULT_THRESHOLD,
    MEAN_SCORING,
    SCORINGS,
    TOKENUNIFY_SCORING,
    Agglomerator,
    mutex_watershed,
    segment_affinities,
)
from .blockwise import segment_blockwise
from .cleanup import cleanup, fill_holes, remove_small
from .evaluate import evaluate
from .fragments import fragments_from_affinities
from .pipeline import PipelineResult, SegmentResult, run_pipeline, segment
from .predict import TilePredictor, plan_tiles, predict_affinities
from .tiling import Block, TileGrid, order_blocks, parse_box

__all__ = [
    "DEFAULT_THRESHOLD",
    "MEAN_SCORING",
    "SCORINGS",
    "TOKENUNIFY_SCORING",
    "Agglomerator",
    "Block",
    "PipelineResult",
    "SegmentResult",
    "TileGrid",
    "TilePredictor",
    "cleanup",
    "evaluate",
    "fill_holes",
    "fragments_from_affinities",
    "mutex_watershed",
    "order_blocks",
    "parse_box",
    "plan_tiles",
    "predict_affinities",
    "remove_small",
    "run_pipeline",
    "segment",
    "segment_affinities",
    "segment_blockwise",
]
