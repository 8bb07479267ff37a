"""Real portraits in, full frames out: face detection, aligned crops and paste-back (docs/portraits.md)."""

from fada_rt.face.align import centre_transform, face_transform, warp_crop
from fada_rt.face.detect import Face, FaceDetector
from fada_rt.face.paste import Compositor, seam_ratio
from fada_rt.face.portrait import (
    CROP_MODES,
    MAX_SIDE,
    OUTPUT_MODES,
    CropMode,
    FaceError,
    OutputMode,
    Portrait,
    load_portrait,
    min_crop_side,
)

__all__ = [
    "CROP_MODES", "MAX_SIDE", "OUTPUT_MODES", "Compositor", "CropMode", "Face", "FaceDetector", "FaceError",
    "OutputMode", "Portrait", "centre_transform", "face_transform", "load_portrait", "min_crop_side",
    "seam_ratio", "warp_crop",
]
