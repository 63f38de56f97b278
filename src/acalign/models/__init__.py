"""Models: the CRNN audio encoder, the aligner (dual encoder + frame-word similarity), losses."""

from acalign.models.aligner import REDUCTIONS, Aligner, AlignerConfig, reduce_similarity
from acalign.models.crnn import CRNN, CRNNConfig
from acalign.models.losses import LogitScale, frame_bce_loss, info_nce_loss, triplet_ranking_loss

__all__ = [
    "CRNN",
    "REDUCTIONS",
    "Aligner",
    "AlignerConfig",
    "CRNNConfig",
    "LogitScale",
    "frame_bce_loss",
    "info_nce_loss",
    "reduce_similarity",
    "triplet_ranking_loss",
]
