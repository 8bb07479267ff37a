"""Face-aligned square crops: a similarity transform (rotation, uniform scale, shift) that puts the eye
centres where :class:`~fada_rt.config.CropConfig` says, and the anti-aliased warp that cuts the crop.

Transforms are (2, 3) float64 matrices mapping *image* pixel coordinates to *crop* pixel coordinates
(pixel centres at integer positions, as OpenCV's ``warpAffine``). The same functions cut the training
crops (``train.prepare``) and the run-time portrait (:func:`fada_rt.face.load_portrait`).
"""

from __future__ import annotations

import numpy as np

from fada_rt.config import CropConfig


def face_transform(left_eye: np.ndarray, right_eye: np.ndarray, *, crop: CropConfig, size: int) -> np.ndarray:
    """(2, 3) image -> crop map that levels the eye line and scales the eye distance to
    ``crop.eye_distance * size``, with the eyes' midpoint at ``(size / 2, crop.eye_y * size)``."""
    left_eye, right_eye = np.asarray(left_eye, np.float64), np.asarray(right_eye, np.float64)
    d = right_eye - left_eye
    distance = float(np.hypot(*d))
    if distance <= 0:
        raise ValueError("the two eye positions coincide; no alignment is possible")
    scale = crop.eye_distance * size / distance
    c, s = d / distance * scale  # scale * (cos a, sin a) of the eye line's angle a
    rotate = np.array([[c, s], [-s, c]])  # turns the eye line level and scales it
    mid = (left_eye + right_eye) / 2
    target = np.array([(size - 1) / 2, crop.eye_y * size])
    return np.hstack([rotate, (target - rotate @ mid)[:, None]])


def centre_transform(width: int, height: int, *, size: int) -> np.ndarray:
    """(2, 3) map of the centre square on the short side, scaled to ``size`` (for images already framed like
    the model's training crops). Pixel i's centre goes to ``(i - x0 + 0.5) * scale - 0.5``."""
    side = min(width, height)
    scale = size / side
    x0, y0 = (width - side) // 2, (height - side) // 2
    return np.array([[scale, 0.0, (0.5 - x0) * scale - 0.5], [0.0, scale, (0.5 - y0) * scale - 0.5]])


def scale_of(transform: np.ndarray) -> float:
    """The uniform scale of a similarity transform (crop pixels per image pixel)."""
    return float(np.sqrt(abs(np.linalg.det(transform[:, :2]))))


def crop_corners(transform: np.ndarray, size: int) -> np.ndarray:
    """(4, 2) image coordinates of the crop square's corners."""
    inverse = invert(transform)
    square = np.array([[-0.5, -0.5], [size - 0.5, -0.5], [size - 0.5, size - 0.5], [-0.5, size - 0.5]])
    return square @ inverse[:, :2].T + inverse[:, 2]


def invert(transform: np.ndarray) -> np.ndarray:
    a = np.linalg.inv(transform[:, :2])
    return np.hstack([a, (-a @ transform[:, 2])[:, None]])


def warp_crop(image: np.ndarray, transform: np.ndarray, size: int) -> np.ndarray:
    """Cut the ``(size, size, 3)`` crop of ``transform`` from ``image``. Downscaling by more than 1.5x first
    shrinks the crop's region with area averaging (no aliasing); parts of the crop outside the image repeat
    its edge pixels."""
    import cv2

    x0, y0, x1, y1 = _bounds(crop_corners(transform, size), image.shape[:2], pad=2)
    region = image[y0:y1, x0:x1]
    shift = np.array([[1.0, 0, x0], [0, 1.0, y0]])  # region pixels -> image pixels
    local = transform @ np.vstack([shift, [0, 0, 1]])
    scale = scale_of(transform)
    if scale < 1 / 1.5:
        w, h = max(1, round(region.shape[1] * scale)), max(1, round(region.shape[0] * scale))
        sx, sy = region.shape[1] / w, region.shape[0] / h  # small-region pixel -> region pixel (at centres)
        region = cv2.resize(region, (w, h), interpolation=cv2.INTER_AREA)
        unshrink = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]])
        local = local @ unshrink
    return cv2.warpAffine(region, local, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _bounds(points: np.ndarray, hw: tuple[int, int], *, pad: int) -> tuple[int, int, int, int]:
    """Integer bounding box (x0, y0, x1, y1) of ``points`` grown by ``pad``, clipped to the image."""
    h, w = hw
    x0, y0 = np.floor(points.min(axis=0)).astype(int) - pad
    x1, y1 = np.ceil(points.max(axis=0)).astype(int) + pad + 1
    return max(0, x0), max(0, y0), min(w, x1), min(h, y1)
