"""Training losses, one module each."""

from model.losses.depth import frame_points, sparse_depth_loss
from model.losses.photometric import dssim, photometric_loss
from model.losses.regularisers import offset_regulariser, scale_regulariser

__all__ = [
    "dssim",
    "frame_points",
    "offset_regulariser",
    "photometric_loss",
    "scale_regulariser",
    "sparse_depth_loss",
]
