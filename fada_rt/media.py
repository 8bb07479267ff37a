"""Media in: portrait images (Pillow) and audio decoding (PyAV); video out is :mod:`fada_rt.video_out`.

Conventions (docs/design.md §4): the model's :class:`~fada_rt.config.AudioConfig` — video at ``fps``, mono
float32 audio in [-1, 1] at ``sample_rate``, frame ``k`` covering samples ``[spf k, spf (k+1))`` with
``spf = sample_rate / fps``. :data:`SAMPLE_RATE` and :data:`FPS` are its defaults (every preset's), used
where no model is at hand.

**Images** (:func:`read_image`): decoded with Pillow, EXIF orientation applied, transparency composited
over white, converted to RGB; pictures larger than ``max_side`` on the long side are downscaled to it
(JPEGs decode at a reduced scale directly) and the caller is told. Files Pillow cannot decode (not an
image, empty, truncated, corrupt) are refused; so are pictures over :data:`MAX_PIXELS` (64 Mpx) that are not
JPEGs (those decode reduced), from the header's size before decoding (:mod:`fada_rt.image_in`). 16-bit
greyscale is scaled to 8 bits; an animated picture gives its first frame. Where the face is and how
it is cut out is :mod:`fada_rt.face`; :func:`load_image` is the policy for pictures already framed like
the model's training crops: the centre square on the short side, resized to the model resolution.

**Audio** (:func:`iter_audio`): anything PyAV/ffmpeg decodes (wav, mp3, m4a, flac, ogg, the audio
track of an mp4), any rate and channel count, decoded block by block (long files are never held
in memory), resampled to :data:`SAMPLE_RATE` (or the rate asked for) by libswresample and down-mixed
to mono by averaging channels.

PyAV is imported by the functions that decode: images and the in-memory pipeline (the
embedding API fed with PCM) run without it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps

from fada_rt.audio_in import DecodeChecks, check_pcm, declared_duration
from fada_rt.config import AudioConfig
from fada_rt.image_in import MAX_PIXELS, to_eight_bit  # noqa: F401  (MAX_PIXELS: part of this module's API)
from fada_rt.image_in import open_image as _open_image
from fada_rt.outputs import check_input_file

if TYPE_CHECKING:
    import av  # the functions that use it import it (see the module docstring)

_AUDIO = AudioConfig()  # the defaults: the one place the runtime's rates come from when no model is at hand
SAMPLE_RATE: int = _AUDIO.sample_rate
FPS: int = _AUDIO.fps
SAMPLES_PER_FRAME: int = _AUDIO.samples_per_frame
AUDIO_HINT = "give an audio file ffmpeg/PyAV can decode (wav, mp3, m4a, flac, ogg, or a video with an audio track)"


# ---- images ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedImage:
    pixels: np.ndarray  # (H, W, 3) uint8 RGB
    original_size: tuple[int, int]  # (width, height) of the file, before any downscaling

    @property
    def downscaled(self) -> bool:
        return self.original_size != (self.pixels.shape[1], self.pixels.shape[0])


def read_image(source: str | Path | np.ndarray | Image.Image, *, max_side: int | None = None) -> LoadedImage:
    """A picture as uint8 RGB, downscaled (area averaging) to ``max_side`` on its long side when larger."""
    if isinstance(source, np.ndarray):
        image = _image_from_array(source)
        original = image.size
    elif isinstance(source, Image.Image):
        image, original = source, source.size
    else:
        image, original = _open_image(Path(source), max_side=max_side)
    name = str(source) if isinstance(source, (str, Path)) else "the image"
    image = _to_rgb(to_eight_bit(ImageOps.exif_transpose(image), name))
    if max_side is not None and max(image.size) > max_side:
        f = max_side / max(image.size)
        image = image.resize((max(1, round(image.size[0] * f)), max(1, round(image.size[1] * f))),
                             Image.Resampling.BOX)
    return LoadedImage(pixels=np.asarray(image, dtype=np.uint8).copy(), original_size=tuple(original))


def load_image(source: str | Path | np.ndarray | Image.Image, *, resolution: int) -> np.ndarray:
    """A picture already framed like the training crops as uint8 RGB ``(resolution, resolution, 3)``: the centre
    square on the short side, resized. Pictures whose short side is under half the resolution are refused."""
    image = Image.fromarray(read_image(source).pixels)
    w, h = image.size
    min_side = resolution // 2
    if min(w, h) < min_side:
        raise ValueError(
            f"the image is {w}x{h} px; its shorter side must be at least {min_side} px (the model renders "
            f"{resolution}x{resolution}); use a larger portrait"
        )
    side = min(w, h)  # centre crop to a square on the short side
    left, top = (w - side) // 2, (h - side) // 2
    image = image.crop((left, top, left + side, top + side))
    if side != resolution:
        image = image.resize((resolution, resolution), Image.Resampling.LANCZOS)
    return np.asarray(image, dtype=np.uint8).copy()


def _image_from_array(array: np.ndarray) -> Image.Image:
    if array.dtype != np.uint8:
        raise ValueError(f"an image array must be uint8 (H, W, 3) RGB, got dtype {array.dtype}")
    if array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4)):
        return Image.fromarray(array)
    raise ValueError(f"an image array must be (H, W), (H, W, 3) or (H, W, 4), got shape {array.shape}")


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


# ---- audio -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AudioInfo:
    path: Path
    duration: float | None  # seconds, from the container; None when it does not say
    sample_rate: int
    channels: int
    codec: str


def _open_audio(path: str | Path) -> tuple[av.container.InputContainer, av.audio.stream.AudioStream]:
    import av

    path = Path(path)
    check_input_file(path, what="audio file")
    try:
        container = av.open(str(path))
    except av.FFmpegError as err:
        raise ValueError(f"cannot read audio from {path} ({err}): not a format ffmpeg/PyAV knows, or a corrupt or "
                         f"truncated file (re-export or re-download it); {AUDIO_HINT}") from err
    if not container.streams.audio:
        what = " (a video without sound)" if container.streams.video else ""
        container.close()
        raise ValueError(f"{path} has no audio stream{what}; {AUDIO_HINT}")
    return container, container.streams.audio[0]


def probe_audio(path: str | Path) -> AudioInfo:
    """Container metadata without decoding (the duration may be None for raw streams)."""
    container, stream = _open_audio(path)
    with container:
        return AudioInfo(Path(path), declared_duration(container, stream), stream.codec_context.sample_rate or 0,
                         stream.codec_context.channels or 0, stream.codec_context.name)


def iter_audio(path: str | Path, *, sample_rate: int = SAMPLE_RATE, block_samples: int | None = None
               ) -> Iterator[np.ndarray]:
    """Decode ``path`` to mono float32 blocks at ``sample_rate`` of about ``block_samples`` (default: one
    second; the last may be shorter).

    Never holds more than about one block plus one decoded packet. Decoding errors are ValueErrors
    that say where in the file they happened; so are NaN/inf samples (raised before the block holding them
    is yielded). Samples are clipped to [-1, 1], with a warning when the file holds samples beyond it; a file
    that decodes clearly shorter than its container declares, or ends in a packet that does not decode, is
    probably truncated: a warning says so and what decoded is used (:mod:`fada_rt.audio_in`).
    """
    import av

    block_samples = block_samples or sample_rate
    container, stream = _open_audio(path)
    checks = DecodeChecks(path, declared_duration(container, stream, own=True), sample_rate=sample_rate)
    pending: list[np.ndarray] = []
    count = 0
    with container:
        try:
            if stream.codec_context.name.startswith("pcm_f"):  # float PCM: NaN/inf refused before any block
                checks.prescan()
            for mono in checks.mono(container, stream):
                pending.append(mono)
                count += mono.shape[0]
                while count >= block_samples:
                    block = np.concatenate(pending)
                    yield block[:block_samples]
                    rest = block[block_samples:]
                    pending, count = ([rest] if rest.size else []), rest.shape[0]
        except av.FFmpegError as err:
            raise ValueError(f"decoding {path} failed after {checks.seconds:.2f} s ({err}); "
                             f"the file is corrupt or truncated; re-export or re-download it") from err
    checks.finish()
    if count:
        yield np.concatenate(pending)


def read_audio(path: str | Path, *, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The whole file as one mono float32 array at ``sample_rate`` (use :func:`iter_audio` for long files)."""
    blocks = list(iter_audio(path, sample_rate=sample_rate))
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)


def write_wav(path: str | Path, wave: np.ndarray, *, sample_rate: int = SAMPLE_RATE) -> None:
    """16-bit PCM wav of a mono float wave in [-1, 1] (or (channels, n) for multi-channel)."""
    import wave as wavelib

    data = np.atleast_2d(np.asarray(wave, dtype=np.float64))
    pcm = (np.clip(data, -1.0, 1.0) * 32767.0).round().astype("<i2").T  # (n, channels) interleaved
    with wavelib.open(str(path), "wb") as f:
        f.setnchannels(data.shape[0])
        f.setsampwidth(2)
        f.setframerate(sample_rate)
        f.writeframes(pcm.tobytes())


def to_mono_float(pcm: np.ndarray, *, sample_rate: int | None = None) -> np.ndarray:
    """PCM ``(n,)`` or ``(n, channels)`` (sounddevice's layout), float in [-1, 1] or int16/int32,
    -> float32 mono ``(n,)`` (channels averaged).

    Refused (ValueError): NaN/inf samples (the message gives the first one's time when ``sample_rate`` is
    given), and 2-D arrays that are not ``(samples, channels)`` with 1 to 8 channels, e.g. ``(2, 48000)``
    (:func:`fada_rt.audio_in.check_pcm`). Float values beyond ±1 are passed on as they are (the outputs clip
    them when they encode)."""
    pcm = check_pcm(pcm, sample_rate=sample_rate)
    if pcm.dtype == np.int16:
        pcm = pcm.astype(np.float32) / 32768.0
    elif pcm.dtype == np.int32:
        pcm = pcm.astype(np.float32) / 2147483648.0
    if pcm.ndim == 2:
        pcm = pcm.mean(axis=1)
    return pcm.astype(np.float32, copy=False)


class PcmConverter:
    """Streaming conversion of pushed PCM at one input rate to mono float32 at ``rate`` (libswresample)."""

    def __init__(self, *, rate: int = SAMPLE_RATE) -> None:
        self.target = rate
        self.rate: int | None = None
        self._resampler: av.AudioResampler | None = None

    def convert(self, pcm: np.ndarray, sample_rate: int) -> np.ndarray:
        import av

        if not isinstance(sample_rate, int) or sample_rate <= 0:
            raise ValueError(f"sample_rate must be a positive int (Hz), got {sample_rate!r}")
        if self.rate is None:
            self.rate = sample_rate
        elif sample_rate != self.rate:
            raise ValueError(f"sample_rate changed from {self.rate} to {sample_rate} Hz within one stream")
        mono = to_mono_float(pcm, sample_rate=sample_rate)
        if sample_rate == self.target:
            return mono
        if self._resampler is None:
            self._resampler = av.AudioResampler(format="flt", layout="mono", rate=self.target)
        if mono.size == 0:
            return mono
        frame = av.AudioFrame.from_ndarray(mono[None], format="flt", layout="mono")
        frame.sample_rate = sample_rate
        return self._collect(self._resampler.resample(frame))

    def flush(self) -> np.ndarray:
        """The resampler's last buffered samples (call once at the end of the stream)."""
        if self._resampler is None:
            return np.zeros(0, np.float32)
        return self._collect(self._resampler.resample(None))

    @staticmethod
    def _collect(frames: list[av.AudioFrame]) -> np.ndarray:
        if not frames:
            return np.zeros(0, np.float32)
        return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.float32, copy=False)
