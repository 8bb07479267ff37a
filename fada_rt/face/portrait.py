"""A portrait ready for the model: the full picture, the face found in it, the model's aligned crop and the
compositor that pastes generated crops back (docs/portraits.md).

``load_portrait(image, resolution=..., crop=model_config.crop)``:

1. read the picture (:func:`fada_rt.media.read_image`; over ``max_side`` on the long side it is downscaled,
   and ``Portrait.note`` says so); odd sides are padded by one repeated pixel (H.264's yuv420p needs even
   sides);
2. ``mode="face"`` (the default): find the faces (:class:`~fada_rt.face.detect.FaceDetector`), take the
   largest or ``face_index``, align it (:func:`~fada_rt.face.align.face_transform`) and cut the crop;
   ``mode="centre"``: the centre square, for pictures already framed like the model's training crops;
3. refuse a face whose crop would be smaller than :func:`min_crop_side` pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from fada_rt.config import CropConfig
from fada_rt.face.align import centre_transform, face_transform, scale_of, warp_crop
from fada_rt.face.detect import Face, FaceDetector
from fada_rt.face.paste import Compositor
from fada_rt.media import read_image

CropMode = Literal["face", "centre"]
CROP_MODES: tuple[str, ...] = ("face", "centre")
OutputMode = Literal["full", "crop"]
OUTPUT_MODES: tuple[str, ...] = ("full", "crop")
MAX_SIDE = 4096  # full pictures larger than this on the long side are downscaled unless max_side says otherwise


class FaceError(ValueError):
    """No usable face in the picture; the message says what was found and what to do."""


def min_crop_side(resolution: int) -> int:
    """Smallest face crop (in the picture's pixels) a model of ``resolution`` accepts: a quarter of its frame
    side, and never under 32 px."""
    return max(32, resolution // 4)


@dataclass(frozen=True, eq=False)
class Portrait:
    image: np.ndarray  # (H, W, 3) uint8: the full picture (after max_side and even padding)
    crop: np.ndarray  # (S, S, 3) uint8: what the model sees
    transform: np.ndarray  # (2, 3) picture pixels -> crop pixels
    faces: tuple[Face, ...]  # every face found (empty for mode="centre")
    face_index: int | None  # the one used
    name: str  # for messages
    note: str | None = None  # what loading changed (downscaled, padded), for the caller to print

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the full output frames."""
        return self.image.shape[1], self.image.shape[0]

    @cached_property
    def compositor(self) -> Compositor:
        return Compositor(self.image, self.transform, self.crop.shape[0], reference=self.crop)

    def frame(self, generated: np.ndarray, output: OutputMode = "full") -> np.ndarray:
        """A generated crop (S, S, 3) as an output frame: pasted into the picture (``full``) or as it is."""
        return self.compositor.paste(generated) if output == "full" else generated

    def describe_faces(self) -> str:
        lines = [f"{len(self.faces)} face(s) in {self.name}:"]
        for i, face in enumerate(self.faces):
            lines.append(f"  [{i}] {face.describe()}" + ("  <- used" if i == self.face_index else ""))
        return "\n".join(lines)


_DETECTOR: FaceDetector | None = None


def default_detector() -> FaceDetector:
    """One shared detector per process (loading the landmark model takes ~0.1 s)."""
    global _DETECTOR
    if _DETECTOR is None:
        _DETECTOR = FaceDetector()
    return _DETECTOR


def load_portrait(image: str | Path | np.ndarray | Image.Image, *, resolution: int, crop: CropConfig,
                  mode: CropMode = "face", face_index: int | None = None, max_side: int | None = MAX_SIDE,
                  detector: FaceDetector | None = None) -> Portrait:
    """Read ``image`` and cut the model's crop; see the module docstring. Errors are :class:`FaceError` /
    ``ValueError`` with one-line messages."""
    if mode not in CROP_MODES:
        raise ValueError(f"unknown crop mode {mode!r}; expected one of {CROP_MODES}")
    name = str(image) if isinstance(image, (str, Path)) else "the image"
    loaded = read_image(image, max_side=max_side)
    pixels, notes = loaded.pixels, []
    if loaded.downscaled:
        w0, h0 = loaded.original_size
        notes.append(f"{name} is {w0}x{h0} px; downscaled to {pixels.shape[1]}x{pixels.shape[0]} "
                     f"(--max-side {max_side})")
    pixels, padded = _even(pixels)
    if padded:
        notes.append(f"padded to {pixels.shape[1]}x{pixels.shape[0]} (video needs even sides)")
    h, w = pixels.shape[:2]
    if mode == "centre":
        if min(w, h) < resolution // 2:
            raise ValueError(f"{name} is {w}x{h} px; its shorter side must be at least {resolution // 2} px for "
                             f"the {resolution} px model; use a larger picture")
        transform = centre_transform(w, h, size=resolution)
        return Portrait(image=pixels, crop=warp_crop(pixels, transform, resolution), transform=transform, faces=(),
                        face_index=None, name=name, note="; ".join(notes) or None)
    if min(w, h) < min_crop_side(resolution):
        raise FaceError(f"{name} is {w}x{h} px: too small to hold a face the model can use (its face crop must be "
                        f"at least {min_crop_side(resolution)} px); use a larger picture")
    faces = tuple((detector or default_detector())(pixels))
    if not faces:
        raise FaceError(f"no face found in {name} ({w}x{h} px): the detector finds frontal faces at least ~40 px "
                        f"wide, turned less than ~30°; crop the picture closer around the face, or pass "
                        f"--crop centre if it is already framed like the model's training images")
    index = 0 if face_index is None else face_index
    if not 0 <= index < len(faces):
        listing = "; ".join(f"[{i}] {f.describe()}" for i, f in enumerate(faces))
        raise FaceError(f"--face-index {face_index} is out of range: {len(faces)} face(s) in {name}: {listing}")
    face = faces[index]
    transform = face_transform(face.left_eye, face.right_eye, crop=crop, size=resolution)
    side = resolution / scale_of(transform)
    if side < min_crop_side(resolution):
        raise FaceError(f"the face in {name} is too small for the model: its eyes are {face.eye_distance:.0f} px "
                        f"apart, so its crop is {side:.0f} px, under the {min_crop_side(resolution)} px the "
                        f"{resolution} px model needs; use a larger or closer photo")
    return Portrait(image=pixels, crop=warp_crop(pixels, transform, resolution), transform=transform, faces=faces,
                    face_index=index, name=name, note="; ".join(notes) or None)


def _even(pixels: np.ndarray) -> tuple[np.ndarray, bool]:
    h, w = pixels.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return pixels, False
    return np.pad(pixels, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge"), True
