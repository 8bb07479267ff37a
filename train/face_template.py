"""Measure a dataset's face framing: where the eyes sit in its frames, as a :class:`~fada_rt.config.CropConfig`.

``python -m train.face_template --data DIR [--clips 200]``

For a model trained on frames that were not cut by ``train.prepare`` (the synthetic world renders its own
framing), this finds the framing the model learnt, with the run time's own detector and landmarks, so
that :func:`fada_rt.face.load_portrait` cuts real pictures the same way. Prints the median eye distance and
eye height (fractions of the frame side), their spread, the roll and the detection rate over the first
frame of each clip.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from fada_rt.clips import list_clips, read_clip
from fada_rt.config import CropConfig
from fada_rt.face import FaceDetector


@dataclass(frozen=True)
class Template:
    crop: CropConfig  # the medians
    eye_distance_iqr: tuple[float, float]
    eye_y_iqr: tuple[float, float]
    roll_median: float
    detected: int
    clips: int


def measure_template(*, data: str, clips: int = 200, detector: FaceDetector | None = None,
                     progress: bool = True) -> Template:
    """Median framing of the first frames of up to ``clips`` clips of ``data``."""
    detector = detector or FaceDetector()
    paths = list_clips(data)[:clips]
    if not paths:
        raise FileNotFoundError(f"{data} holds no clips")
    distance, height, roll = [], [], []
    for path in tqdm(paths, desc="measuring the framing", disable=not progress):
        frame = read_clip(path).frames[0]
        side = frame.shape[0]
        faces = detector(np.ascontiguousarray(frame))
        if faces:
            face = faces[0]
            distance.append(face.eye_distance / side)
            height.append(float((face.left_eye[1] + face.right_eye[1]) / 2 + 0.5) / side)  # pixel centres
            roll.append(face.angle)
    if not distance:
        raise ValueError(f"no face found in the first frames of {len(paths)} clips of {data}")
    d, y = np.array(distance), np.array(height)
    return Template(crop=CropConfig(eye_distance=round(float(np.median(d)), 4), eye_y=round(float(np.median(y)), 4)),
                    eye_distance_iqr=tuple(np.percentile(d, [25, 75]).round(4)),
                    eye_y_iqr=tuple(np.percentile(y, [25, 75]).round(4)),
                    roll_median=float(np.median(roll)), detected=len(distance), clips=len(paths))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="dataset folder (clip format)")
    p.add_argument("--clips", type=int, default=200, help="how many clips to measure (default: %(default)s)")
    args = p.parse_args(argv)
    t = measure_template(data=args.data, clips=args.clips)
    print(f"faces found in {t.detected} of {t.clips} first frames")
    print(f"eye_distance {t.crop.eye_distance} (IQR {t.eye_distance_iqr[0]}-{t.eye_distance_iqr[1]}), "
          f"eye_y {t.crop.eye_y} (IQR {t.eye_y_iqr[0]}-{t.eye_y_iqr[1]}), roll median {t.roll_median:+.1f}°")
    print(f"CropConfig(eye_distance={t.crop.eye_distance}, eye_y={t.crop.eye_y})")


if __name__ == "__main__":
    main()
