"""Face detection with five landmarks: dlib's HOG frontal-face detector and its 5-point shape predictor.

Both models ship inside pip packages, nothing is downloaded at run time: the HOG detector is compiled
into ``dlib`` (the ``dlib-bin`` wheel), the landmark model is ``shape_predictor_5_face_landmarks.dat``
of ``face_recognition_models`` (dlib's own format, not a pickle). The choice is measured in
``benchmarks/portrait.py`` (docs/portraits.md): against OpenCV's Haar cascade and dlib's CNN detector
on the photos that ship with scikit-image and matplotlib and on composites of them.

**Limits** (docs/portraits.md): frontal and near-frontal faces (yaw up to ~45°); in-plane rotation up to
~30° by searching the image turned by each of :attr:`FaceDetector.rotations`; the detector's window is
80 px, images under 1024 px on the long side are searched doubled until they come nearest to it (a 512 px
picture finds faces from 40 px, a 64 px one from 10 px), larger ones at their own size (faces from
80 px: in a 4K picture, 2 % of its width); cartoons, drawings and animal faces are usually not found; scores under ``min_score``
are dropped (0.3 keeps real faces and drops the badges, patches and textures that score 0 to 0.2).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LANDMARK_MODEL = "shape_predictor_5_face_landmarks.dat"
INSTALL_HINT = "face detection needs dlib and its landmark model: pip install dlib-bin face-recognition-models"


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face in image pixel coordinates (x right, y down)."""

    box: tuple[float, float, float, float]  # (x0, y0, x1, y1), axis-aligned around the detection
    score: float  # the detector's SVM score (higher: more face-like)
    landmarks: np.ndarray  # (5, 2): two corners of the image-right eye, two of the image-left eye, nose

    @property
    def left_eye(self) -> np.ndarray:
        """Centre of the eye on the image's left (the subject's right eye), (2,)."""
        return self.landmarks[2:4].mean(axis=0)

    @property
    def right_eye(self) -> np.ndarray:
        return self.landmarks[0:2].mean(axis=0)

    @property
    def eye_distance(self) -> float:
        return float(np.linalg.norm(self.right_eye - self.left_eye))

    @property
    def angle(self) -> float:
        """Roll of the eye line in degrees (positive: the right eye lower, i.e. turned clockwise on screen)."""
        d = self.right_eye - self.left_eye
        return float(np.degrees(np.arctan2(d[1], d[0])))

    @property
    def size(self) -> float:
        """Side of the detection box in pixels (the mean of its width and height)."""
        x0, y0, x1, y1 = self.box
        return float((x1 - x0 + y1 - y0) / 2)

    def describe(self) -> str:
        x0, y0, x1, y1 = self.box
        return (f"box ({x0:.0f}, {y0:.0f})-({x1:.0f}, {y1:.0f}) px, {self.size:.0f} px wide, eyes "
                f"{self.eye_distance:.0f} px apart, roll {self.angle:+.0f}°, score {self.score:.2f}")


def landmark_model_path() -> Path:
    """The 5-point model inside the installed ``face_recognition_models`` (found without importing it:
    its ``__init__`` needs the retired ``pkg_resources``)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(INSTALL_HINT)
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / LANDMARK_MODEL
    if not path.is_file():
        raise RuntimeError(f"{path} is missing; reinstall face-recognition-models ({INSTALL_HINT})")
    return path


class FaceDetector:
    """Faces of an RGB uint8 image, largest first (see the module docstring for its limits)."""

    def __init__(self, *, rotations: tuple[float, ...] = (0.0, 25.0, -25.0), min_score: float = 0.3,
                 turned_min_score: float = 0.6, small_image: int = 1024) -> None:
        try:
            import dlib
        except ImportError as err:
            raise RuntimeError(INSTALL_HINT) from err
        self.rotations = rotations
        self.min_score = min_score
        self.turned_min_score = turned_min_score
        self.small_image = small_image
        self._hog = dlib.get_frontal_face_detector()
        self._landmarks = dlib.shape_predictor(str(landmark_model_path()))
        self._rectangle = dlib.rectangle

    def __call__(self, image: np.ndarray) -> list[Face]:
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"the detector takes uint8 (H, W, 3) RGB, got {image.dtype} {image.shape}")
        upsample = upsample_count(max(image.shape[:2]), self.small_image)
        found: list[Face] = []
        for degrees in self.rotations:
            turned, back = _rotate(image, degrees)  # back: (2, 3) from the turned image to the input
            threshold = self.min_score if degrees == 0 else self.turned_min_score
            rects, scores, _ = self._hog.run(turned, upsample, threshold)
            for rect, score in zip(rects, scores):
                shape = self._landmarks(turned, rect)
                points = np.array([(p.x, p.y) for p in shape.parts()], np.float64)  # (5, 2)
                corners = np.array([(rect.left(), rect.top()), (rect.right(), rect.top()),
                                    (rect.right(), rect.bottom()), (rect.left(), rect.bottom())], np.float64)
                points, corners = _apply(back, points), _apply(back, corners)
                box = (*corners.min(axis=0), *corners.max(axis=0))
                found.append(Face(box=tuple(float(v) for v in box), score=float(score), landmarks=points))
        return _merge(found)


def upsample_count(long_side: int, small_image: int) -> int:
    """How many times the HOG detector doubles the image: until its long side reaches ``small_image`` (at most 3)."""
    return int(min(3, max(0, round(float(np.log2(small_image / max(long_side, 1)))))))


def _rotate(image: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """The image turned by ``degrees`` (counter-clockwise on screen) on a canvas that holds all of it, and
    the (2, 3) affine map from the turned image's pixels back to the input's."""
    if degrees == 0:
        return np.ascontiguousarray(image), np.array([[1.0, 0, 0], [0, 1.0, 0]])
    import cv2

    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)  # (2, 3) input -> turned
    c, s = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(np.ceil(w * c + h * s)), int(np.ceil(w * s + h * c))
    m[:, 2] += ((nw - w) / 2, (nh - h) / 2)
    turned = cv2.warpAffine(image, m, (nw, nh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return turned, cv2.invertAffineTransform(m)


def _apply(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ m[:, :2].T + m[:, 2]  # (N, 2)


def _merge(faces: list[Face]) -> list[Face]:
    """One face per person: detections whose eye midpoints lie within half an eye distance of a better-scoring
    one are the same face found in another rotation. Largest first."""
    kept: list[Face] = []
    for face in sorted(faces, key=lambda f: -f.score):
        mid = (face.left_eye + face.right_eye) / 2
        if all(np.linalg.norm(mid - (k.left_eye + k.right_eye) / 2) > 0.5 * max(k.eye_distance, face.eye_distance)
               for k in kept):
            kept.append(face)
    return sorted(kept, key=lambda f: -f.size)
