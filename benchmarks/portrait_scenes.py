"""Test pictures for face detection, alignment and paste-back, with their true eye centres.

Real photos that ship inside pip packages (nothing is downloaded): scikit-image's ``astronaut`` (Eileen
Collins, 512x512) and matplotlib's ``grace_hopper.jpg`` (512x600), their pupils marked by hand on 3-4x
enlargements (``EYES``, accurate to about 1.5 px); composites made from them by known transforms, so the
true eyes of every composite follow exactly; and pictures with no face (scikit-image's cat ``chelsea``,
a drawn cartoon face, a blank picture).

``scene(name) -> Scene``: pixels, the true (left, right) eye centres of each face (largest face first)
or none. The names are :data:`SCENES`; :data:`NO_FACE` are the ones without a face.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

EYES = {  # (left, right) pupil centres in the image's pixel coordinates, marked by hand
    "astronaut": ((203.0, 100.5), (246.25, 103.75)),
    "grace_hopper": ((221.7, 190.0), (306.0, 186.7)),
}


@dataclass(frozen=True, eq=False)
class Scene:
    name: str
    image: np.ndarray  # (H, W, 3) uint8
    eyes: tuple[np.ndarray, ...]  # per face (largest first): (2, 2) [left, right] eye centres


def photo(name: str) -> np.ndarray:
    """A real photo shipped in a pip package: ``astronaut`` (scikit-image) or ``grace_hopper`` (matplotlib)."""
    if name == "astronaut":
        from skimage.data import astronaut

        return np.ascontiguousarray(astronaut())
    if name == "grace_hopper":
        import matplotlib
        from PIL import Image

        path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
        return np.asarray(Image.open(path).convert("RGB")).copy()
    raise ValueError(f"unknown photo {name!r}; expected one of {sorted(EYES)}")


def _eyes(name: str, m: np.ndarray | None = None) -> np.ndarray:
    eyes = np.array(EYES[name], np.float64)  # (2, 2)
    return eyes if m is None else eyes @ m[:, :2].T + m[:, 2]


def _canvas(height: int, width: int) -> np.ndarray:
    """A soft grey-blue gradient background (not flat: a detector must not lean on a blank surround)."""
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
    base = np.array([150, 160, 175], np.float32) * (0.8 + 0.2 * y) + np.array([20, 10, -10], np.float32) * x
    return np.clip(base, 0, 255).astype(np.uint8)


def _place(canvas: np.ndarray, image: np.ndarray, x: int, y: int) -> np.ndarray:
    h, w = image.shape[:2]
    canvas[y : y + h, x : x + w] = image
    return np.array([[1.0, 0, x], [0, 1.0, y]])


def cartoon(size: int = 512) -> np.ndarray:
    """A drawn smiley: a yellow disc, two dot eyes, an arc for a mouth (a face to a person, not a photo)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), (250, 250, 250))
    d = ImageDraw.Draw(image)
    s = size / 512
    d.ellipse([96 * s, 96 * s, 416 * s, 416 * s], fill=(255, 214, 40), outline=(40, 40, 40), width=round(6 * s))
    for cx in (200, 312):
        d.ellipse([(cx - 18) * s, 190 * s, (cx + 18) * s, 240 * s], fill=(30, 30, 30))
    d.arc([170 * s, 230 * s, 342 * s, 350 * s], 20, 160, fill=(30, 30, 30), width=round(8 * s))
    return np.asarray(image).copy()


def scene(name: str) -> Scene:
    import cv2

    if name in EYES:
        return Scene(name, photo(name), (_eyes(name),))
    if name == "off_centre_1600x900":
        canvas = _canvas(900, 1600)
        m = _place(canvas, photo("astronaut"), 1040, 330)
        return Scene(name, canvas, (_eyes("astronaut", m),))
    if name == "rotated_20":
        image = photo("astronaut")
        m = cv2.getRotationMatrix2D((255.5, 255.5), 20.0, 1.0)  # counter-clockwise on screen
        turned = cv2.warpAffine(image, m, (512, 512), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
        return Scene(name, turned, (_eyes("astronaut", m),))
    if name == "rotated_35":  # roll +39°: past the upright HOG detector's reach
        image = photo("astronaut")
        m = cv2.getRotationMatrix2D((255.5, 255.5), -35.0, 1.0)
        turned = cv2.warpAffine(image, m, (512, 512), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
        return Scene(name, turned, (_eyes("astronaut", m),))
    if name == "small_in_4k":
        canvas = _canvas(2160, 3840)
        m = _place(canvas, photo("astronaut"), 2900, 1400)  # face ~90 px wide: 2.3 % of the width
        return Scene(name, canvas, (_eyes("astronaut", m),))
    if name == "two_faces":
        canvas = _canvas(720, 1280)
        hopper = _place(canvas, cv2.resize(photo("grace_hopper"), (384, 450), interpolation=cv2.INTER_AREA), 60, 140)
        hopper[:, :2] *= 0.75
        astro = _place(canvas, photo("astronaut"), 700, 100)
        return Scene(name, canvas, (_eyes("grace_hopper", hopper), _eyes("astronaut", astro)))
    if name == "chelsea_cat":
        from skimage.data import chelsea

        return Scene(name, np.ascontiguousarray(chelsea()), ())
    if name == "cartoon":
        return Scene(name, cartoon(), ())
    if name == "blank":
        return Scene(name, np.full((480, 640, 3), 128, np.uint8), ())
    raise ValueError(f"unknown scene {name!r}; expected one of {SCENES}")


SCENES: tuple[str, ...] = ("astronaut", "grace_hopper", "off_centre_1600x900", "rotated_20", "rotated_35",
                           "small_in_4k", "two_faces", "chelsea_cat", "cartoon", "blank")
NO_FACE: tuple[str, ...] = ("chelsea_cat", "cartoon", "blank")
