"""The face-detector candidates of ``benchmarks.portrait`` and how a detection is scored against a scene's true
eyes (the matching and tolerance rules are in that module's docstring)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks.portrait_scenes import Scene

CANDIDATES = {"hog": "dlib HOG ±25°", "hog-upright": "dlib HOG 0°", "haar": "OpenCV Haar", "cnn": "dlib CNN"}
EYE_TOLERANCE = 0.10  # of the true eye distance
MATCH_DISTANCE = 1.5  # eye distances between eye midpoints, at most, to count a found face as a true one


@dataclass(frozen=True, eq=False)
class Found:
    box: tuple[float, float, float, float]  # (x0, y0, x1, y1)
    eyes: np.ndarray | None  # (2, 2) [image-left, image-right] eye centres; None: a landmark failure

    @property
    def middle(self) -> np.ndarray:  # the eyes' midpoint, else the box centre
        return (self.eyes if self.eyes is not None else np.reshape(self.box, (2, 2))).mean(axis=0)


Detect = Callable[[np.ndarray], list[Found]]


def dlib_detector(*, rotations: tuple[float, ...]) -> Detect:
    """:class:`fada_rt.face.FaceDetector` with ``rotations``."""
    from fada_rt.face import FaceDetector

    detector = FaceDetector(rotations=rotations)
    return lambda image: [Found(f.box, np.stack([f.left_eye, f.right_eye])) for f in detector(image)]


def haar_detector() -> Detect:
    """OpenCV's frontal-face Haar cascade, eyes from its eye cascade in the upper half of each face box."""
    import cv2

    face = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    eye = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_eye.xml")
    if face.empty() or eye.empty():
        raise RuntimeError(f"OpenCV's Haar cascades are missing from {cv2.data.haarcascades}")

    def detect(image: np.ndarray) -> list[Found]:
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        found = []
        for x, y, w, h in face.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5):
            eyes = eye.detectMultiScale(grey[y : y + h // 2, x : x + w], scaleFactor=1.1, minNeighbors=3)
            pair = None
            if len(eyes) >= 2:
                two = sorted(eyes.tolist(), key=lambda e: -e[2] * e[3])[:2]
                centres = np.array([(x + ex + ew / 2 - 0.5, y + ey + eh / 2 - 0.5) for ex, ey, ew, eh in two])
                pair = centres[np.argsort(centres[:, 0])]
            found.append(Found((float(x), float(y), float(x + w), float(y + h)), pair))
        return sorted(found, key=lambda f: -(f.box[2] - f.box[0]))

    return detect


def cnn_detector() -> Detect:
    """dlib's MMOD CNN face detector (upsampled like the HOG detector) + the same 5-point landmarks."""
    import dlib

    from fada_rt.face.detect import landmark_model_path, upsample_count

    path = landmark_model_path().parent / "mmod_human_face_detector.dat"
    if not path.is_file():
        raise RuntimeError(f"{path} is missing (it ships with face-recognition-models)")
    cnn = dlib.cnn_face_detection_model_v1(str(path))
    landmarks = dlib.shape_predictor(str(landmark_model_path()))

    def detect(image: np.ndarray) -> list[Found]:
        image = np.ascontiguousarray(image)
        found = []
        for d in cnn(image, upsample_count(max(image.shape[:2]), 1024)):
            r = d.rect
            points = np.array([(p.x, p.y) for p in landmarks(image, r).parts()], np.float64)  # (5, 2)
            eyes = np.stack([points[2:4].mean(axis=0), points[0:2].mean(axis=0)])
            found.append(Found((float(r.left()), float(r.top()), float(r.right()), float(r.bottom())), eyes))
        return sorted(found, key=lambda f: -(f.box[2] - f.box[0]))

    return detect


def make_detector(name: str) -> Detect:
    factories: dict[str, Callable[[], Detect]] = {"hog": lambda: dlib_detector(rotations=(0.0, 25.0, -25.0)),
                                                  "hog-upright": lambda: dlib_detector(rotations=(0.0,)),
                                                  "haar": haar_detector, "cnn": cnn_detector}
    if name not in factories:
        raise ValueError(f"unknown candidate {name!r}; expected one of {tuple(CANDIDATES)}")
    return factories[name]()


def score(s: Scene, found: Sequence[Found]) -> dict[str, Any]:
    """Match ``found`` to the scene's true faces; counts, per-true-face eye errors (None: missed or no eyes)."""
    truths = [(np.asarray(e, np.float64), float(np.linalg.norm(e[1] - e[0]))) for e in s.eyes]
    pairs = sorted((float(np.linalg.norm(f.middle - t.mean(axis=0))) / d, i, j)
                   for i, (t, d) in enumerate(truths) for j, f in enumerate(found))
    matched: dict[int, int] = {}
    for distance, i, j in pairs:
        if distance <= MATCH_DISTANCE and i not in matched and j not in matched.values():
            matched[i] = j
    errors: list[float | None] = []
    for i, (t, d) in enumerate(truths):
        eyes = found[matched[i]].eyes if i in matched else None
        errors.append(None if eyes is None else float(np.linalg.norm(eyes - t, axis=1).max() / d))
    return {"expected": len(truths), "found": len(found), "matched": len(matched), "missed": len(truths) - len(matched),
            "extra": len(found) - len(matched), "landmark_failures": sum(found[j].eyes is None for j in matched.values()),
            "eye_errors": errors,
            "correct": len(found) == len(truths) and all(e is not None and e < EYE_TOLERANCE for e in errors)}
