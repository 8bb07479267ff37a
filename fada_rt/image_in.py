"""Opening picture files for :func:`fada_rt.media.read_image`: the size in the file's header is checked
before any pixel is decoded, and every way a file can fail is a one-line ValueError.

**Size limit**: :data:`MAX_PIXELS`. A JPEG over it (or far over ``max_side``) is decoded at 1/2, 1/4 or 1/8
scale (libjpeg's DCT scaling: the full-size pixels never exist in memory); any other picture over it is
refused, naming its size and the limit. Pillow's own decompression-bomb guard (``Image.MAX_IMAGE_PIXELS``,
left as Pillow sets it) fires inside ``Image.open``, before the size can be read: here its warning is an
error, and both it and Pillow's error are this limit's refusal (a JPEG is then opened with Pillow's JPEG reader
directly, which does not run the guard, and the check above applies). No Pillow warning reaches the caller.

**Pixel formats**: 16-bit greyscale (``I;16``, ``I``) is scaled to 8 bits (Pillow's own conversion clips it to
white); 32-bit float pictures (``F``) are refused. Animated pictures (GIF, APNG, WebP) give their first frame.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, JpegImagePlugin, UnidentifiedImageError

from fada_rt.outputs import check_input_file

MAX_PIXELS = 64_000_000  # decoded size limit (8000 x 8000): about 200 MB as RGB, before the copies loading makes
DOWNSCALE_HINT = "downscale it first (e.g. to 4096 px on the long side)"
_JPEG_SCALES = (1, 2, 4, 8)


class _TooLarge(Exception):
    """A picture over :data:`MAX_PIXELS` (raised inside the Pillow calls, turned into the ValueError outside)."""


def open_image(path: Path, *, max_side: int | None = None) -> tuple[Image.Image, tuple[int, int]]:
    """The decoded image and the file's (width, height); see the module docstring."""
    check_input_file(path, what="image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # see the module docstring
            with _open_lazily(path) as img:
                w, h = img.size
                if isinstance(img, JpegImagePlugin.JpegImageFile):
                    scale = _jpeg_scale(w, h, max_side)
                    if scale is None:
                        raise _TooLarge(_too_large(path, w * h, (w, h)))
                    if scale > 1:
                        img.draft("RGB", (max(1, w // scale), max(1, h // scale)))
                if img.size[0] * img.size[1] > MAX_PIXELS:  # not a JPEG, or draft could not reduce it
                    raise _TooLarge(_too_large(path, w * h, (w, h)))
                img.load()  # decode now: truncated/corrupt data fails here, not later
                return img.copy(), (w, h)
    except _TooLarge as err:
        raise ValueError(str(err)) from None
    except UnidentifiedImageError as err:
        raise ValueError(f"{path} is not an image Pillow can read (PNG, JPEG, WebP, BMP, ...)") from err
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:  # raised while decoding (GIF, TIFF)
        raise ValueError(_too_large(path, _pillow_pixels(err), None)) from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ValueError(f"{path} is a corrupt or truncated image ({err}); re-export or re-download it") from err


def to_eight_bit(image: Image.Image, name: str) -> Image.Image:
    """16-bit greyscale as 8-bit ``L`` (the top 8 bits); other modes unchanged; float pictures refused."""
    if image.mode.startswith("I;16") or image.mode == "I":
        values = np.clip(np.asarray(image, dtype=np.int64), 0, 65535)
        return Image.fromarray((values >> 8).astype(np.uint8), mode="L")
    if image.mode == "F":
        raise ValueError(f"{name} has 32-bit float pixels; save it as an 8- or 16-bit image (PNG, JPEG)")
    return image


def _open_lazily(path: Path) -> Image.Image:
    """``Image.open`` (reads the header only); a JPEG over Pillow's guard is opened without it."""
    try:
        return Image.open(path)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        with path.open("rb") as f:
            if f.read(3) != b"\xff\xd8\xff":  # not a JPEG: it cannot be decoded reduced
                raise _TooLarge(_too_large(path, _pillow_pixels(err), None)) from None
        return JpegImagePlugin.JpegImageFile(path)


def _jpeg_scale(w: int, h: int, max_side: int | None) -> int | None:
    """The JPEG decode reduction: the smallest that fits :data:`MAX_PIXELS`, or more while the long side stays at
    least ``max_side`` (it is downscaled to that anyway); None when even 1/8 does not fit."""
    need = next((s for s in _JPEG_SCALES if -(-w // s) * -(-h // s) <= MAX_PIXELS), None)
    if need is None:
        return None
    allowed = max((s for s in _JPEG_SCALES if max_side is not None and max(w, h) / s >= max_side), default=1)
    return max(need, allowed)


def _too_large(path: Path, pixels: int | None, size: tuple[int, int] | None) -> str:
    what = f"{size[0]}x{size[1]} px ({pixels / 1e6:.0f} Mpx)" if size else (
        f"{pixels / 1e6:.0f} Mpx" if pixels else f"over {Image.MAX_IMAGE_PIXELS / 1e6:.0f} Mpx")
    return f"{path} is {what}, over the {MAX_PIXELS / 1e6:.0f} Mpx this loader decodes; {DOWNSCALE_HINT}"


def _pillow_pixels(err: BaseException) -> int | None:
    """The pixel count in Pillow's decompression-bomb message ("Image size (N pixels) exceeds ...")."""
    found = re.search(r"\((\d+) pixels\)", str(err))
    return int(found.group(1)) if found else None
