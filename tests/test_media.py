"""Media in/out: the image policy, audio decoding of any format/rate/layout, the mp4 writer."""

from __future__ import annotations

import logging
import os
import struct
import time
import warnings
import zlib
from fractions import Fraction

import av
import numpy as np
import psutil
import pytest
from PIL import Image

from fada_rt import image_in
from fada_rt.config import CropConfig
from fada_rt.face.portrait import FaceError, load_portrait
from fada_rt.media import (
    PcmConverter,
    iter_audio,
    load_image,
    probe_audio,
    read_audio,
    read_image,
    to_mono_float,
    write_wav,
)
from fada_rt.video_out import VideoWriter, probe_video


def tone(seconds: float, rate: int, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def encode_audio(path, wave: np.ndarray, *, rate: int, codec: str, layout: str = "mono") -> None:
    """Encode (channels, n) float audio with PyAV (mp3/aac/...)."""
    wave = np.atleast_2d(wave)
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=rate)
        s.layout = layout
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave, dtype=np.float32), format="fltp", layout=layout)
        frame.sample_rate = rate
        frame.pts = 0
        frame.time_base = Fraction(1, rate)
        c.mux(s.encode(frame))
        c.mux(s.encode(None))


def best_lag(a: np.ndarray, b: np.ndarray, max_lag: int) -> int:
    """Lag (samples) maximising the correlation of b shifted against a."""
    n = min(len(a), len(b)) - 2 * max_lag
    scores = [float(np.dot(a[max_lag:max_lag + n], b[max_lag + lag:max_lag + lag + n])) for lag in
              range(-max_lag, max_lag + 1)]
    return int(np.argmax(scores)) - max_lag


# ---- images -----------------------------------------------------------------------------------------


def test_non_square_image_is_centre_cropped_on_the_short_side(tmp_path):
    img = np.zeros((100, 160, 3), np.uint8)  # 160 wide: columns 30..130 are the centre square
    img[:, :30] = (255, 0, 0)
    img[:, 130:] = (0, 0, 255)
    img[:, 30:130] = (0, 200, 0)
    Image.fromarray(img).save(tmp_path / "wide.png")
    out = load_image(tmp_path / "wide.png", resolution=64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - (0, 200, 0)).max() <= 2  # only the green centre survives

    tall = np.zeros((90, 60, 3), np.uint8)
    tall[15:75] = 77
    out = load_image(tall, resolution=64)  # (H, W, 3) arrays follow the same policy
    assert np.abs(out.astype(int) - 77).max() <= 1


def test_image_modes_are_converted_to_rgb(tmp_path):
    rgba = np.zeros((64, 64, 4), np.uint8)  # fully transparent -> composited over white
    Image.fromarray(rgba).save(tmp_path / "clear.png")
    assert (load_image(tmp_path / "clear.png", resolution=64) == 255).all()
    Image.fromarray(np.full((80, 80), 100, np.uint8)).save(tmp_path / "gray.jpg")
    gray = load_image(tmp_path / "gray.jpg", resolution=64)
    assert gray.shape == (64, 64, 3) and abs(int(gray.mean()) - 100) <= 2


def test_bad_images_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image(tmp_path / "missing.png", resolution=64)
    (tmp_path / "notes.png").write_text("this is not a picture")
    with pytest.raises(ValueError, match="not an image"):
        load_image(tmp_path / "notes.png", resolution=64)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load_image(tmp_path / "cut.png", resolution=64)
    Image.fromarray(np.zeros((31, 200, 3), np.uint8)).save(tmp_path / "tiny.png")
    with pytest.raises(ValueError, match="at least 32 px"):
        load_image(tmp_path / "tiny.png", resolution=64)
    with pytest.raises(ValueError, match="uint8"):
        load_image(np.zeros((64, 64, 3), np.float32), resolution=64)
    with pytest.raises(ValueError, match="not a file"):
        load_image(tmp_path, resolution=64)


# ---- audio in ---------------------------------------------------------------------------------------


def test_stereo_44k_wav_is_resampled_to_16k_mono(tmp_path):
    left, right = tone(1.5, 44100, 440, 0.6), tone(1.5, 44100, 440, 0.2)
    write_wav(tmp_path / "st.wav", np.stack([left, right]), sample_rate=44100)
    info = probe_audio(tmp_path / "st.wav")
    assert (info.sample_rate, info.channels) == (44100, 2) and info.duration == pytest.approx(1.5)
    wave = read_audio(tmp_path / "st.wav")
    assert abs(wave.size - 24000) <= 2  # 1.5 s at 16 kHz
    ref = tone(1.5, 16000, 440, 0.4)  # the channel average
    mid = slice(1000, 23000)
    assert np.abs(wave[mid] - ref[mid]).max() < 0.01


@pytest.mark.parametrize(("suffix", "codec", "rate"), [(".mp3", "libmp3lame", 22050), (".m4a", "aac", 48000)])
def test_compressed_audio_decodes_to_the_same_signal(tmp_path, suffix, codec, rate):
    src = tone(2.0, rate, 300, 0.5) * np.repeat([1.0, 0.0], rate)[: 2 * rate]  # 1 s of tone, 1 s of silence
    path = tmp_path / f"a{suffix}"
    encode_audio(path, np.stack([src, src]), rate=rate, codec=codec, layout="stereo")
    wave = read_audio(path)
    assert abs(wave.size / 16000 - 2.0) < 0.08  # within the codec's frame padding
    ref = tone(2.0, 16000, 300, 0.5) * np.repeat([1.0, 0.0], 16000)
    lag = best_lag(ref, wave, 2000)  # encoder delay the container did not remove
    assert abs(lag) < 0.03 * 16000
    aligned = wave[lag + 2000: lag + 14000] if lag >= 0 else wave[2000 + lag: 14000 + lag]
    assert np.corrcoef(aligned, ref[2000:14000])[0, 1] > 0.99
    assert np.abs(wave[int(1.2 * 16000):int(1.9 * 16000)]).max() < 0.02  # the silent second stays silent


def test_audio_track_of_an_mp4_is_read(tmp_path):
    wave = tone(1.0, 16000, 500, 0.3)
    with VideoWriter(tmp_path / "v.mp4", size=32) as w:
        w.write_audio(wave)
        w.write_frames(np.zeros((25, 32, 32, 3), np.uint8))
    back = read_audio(tmp_path / "v.mp4")
    assert abs(back.size - 16000) < 1100  # one AAC frame of padding at most
    assert np.corrcoef(back[2000:14000], wave[2000:14000])[0, 1] > 0.99


def test_bad_audio_gives_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        probe_audio(tmp_path / "nope.wav")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "pic.png")
    with pytest.raises(ValueError, match="has no audio stream"):
        probe_audio(tmp_path / "pic.png")
    (tmp_path / "junk.mp3").write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(ValueError, match="cannot read audio from"):
        list(iter_audio(tmp_path / "junk.mp3"))
    with VideoWriter(tmp_path / "silent_video.mp4", size=32, audio=False) as w:
        w.write_frames(np.zeros((3, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="no audio stream"):
        probe_audio(tmp_path / "silent_video.mp4")
    write_wav(tmp_path / "empty.wav", np.zeros(0))
    assert list(iter_audio(tmp_path / "empty.wav")) == []


def test_hour_long_audio_streams_in_bounded_memory(tmp_path):
    """One hour (8 kHz so the file is small): the duration is known up front and decoding holds
    one block at a time -- 57.6 M samples at 16 kHz would be 230 MB as one array."""
    rate, seconds = 8000, 3600
    rng = np.random.default_rng(0)
    with open(tmp_path / "hour.wav", "wb") as f:  # write the wav header, then the data in pieces
        import wave as wavelib

        with wavelib.open(f, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(1)
            w.setframerate(rate)
            for _ in range(seconds // 60):
                w.writeframes(rng.integers(120, 136, rate * 60, dtype=np.uint8).tobytes())
    assert probe_audio(tmp_path / "hour.wav").duration == pytest.approx(3600.0)
    process = psutil.Process(os.getpid())
    before = process.memory_info().rss
    total, largest, peak = 0, 0, before
    for i, block in enumerate(iter_audio(tmp_path / "hour.wav", block_samples=16000 * 10)):
        total += block.size
        largest = max(largest, block.size)
        if i % 20 == 0:
            peak = max(peak, process.memory_info().rss)
    assert abs(total - seconds * 16000) <= 64
    assert largest == 160000
    assert (peak - before) / 2**20 < 60  # MB: bounded, far below the 230 MB of the whole decode


def test_pcm_converter_streams_like_a_one_shot_resample():
    rng = np.random.default_rng(1)
    pcm = (tone(2.0, 48000, 220, 0.5)[:, None] * [1.0, 0.5]).astype(np.float32)  # (n, 2) as sounddevice gives
    conv = PcmConverter()
    pieces, pos = [], 0
    while pos < len(pcm):
        n = int(rng.integers(100, 2000))
        pieces.append(conv.convert((pcm[pos:pos + n] * 32767).astype(np.int16), 48000))
        pos += n
    pieces.append(conv.flush())
    out = np.concatenate(pieces)
    assert abs(out.size - 32000) <= 1
    ref = tone(2.0, 16000, 220, 0.375)
    assert np.abs(out[500:31000] - ref[500:31000]).max() < 0.01
    with pytest.raises(ValueError, match="changed"):
        conv.convert(pcm[:10], 44100)
    same = PcmConverter().convert(np.full(100, 0.25, np.float32), 16000)  # 16 kHz mono passes through
    assert same.dtype == np.float32 and (same == 0.25).all()
    with pytest.raises(ValueError, match="NaN"):
        to_mono_float(np.array([0.0, np.nan], np.float32))
    with pytest.raises(ValueError, match="samples, channels"):
        to_mono_float(np.zeros((2, 2, 2), np.float32))


# ---- video out --------------------------------------------------------------------------------------


def test_video_writer_frames_pts_and_audio_trimmed_to_video(tmp_path):
    frames = np.zeros((30, 64, 64, 3), np.uint8)
    frames[:, :, :, 0] = np.arange(30)[:, None, None] * 8  # a ramp to check order after decoding
    with VideoWriter(tmp_path / "o.mp4", size=128) as w:
        w.write_audio(tone(2.0, 16000))  # 2 s of audio for 1.2 s of video: trimmed at close
        w.write_frames(frames[:10])
        w.write_frames(frames[10:])
    info = probe_video(tmp_path / "o.mp4")
    assert (info.frames, info.width, info.height, info.fps) == (30, 128, 128, 25.0)
    assert (info.video_codec, info.audio_codec) == ("h264", "aac")
    assert info.audio_duration <= 1.2 + 1 / 25 and info.audio_duration >= 1.2 - 1 / 25
    with av.open(str(tmp_path / "o.mp4")) as c:
        decoded = [(f.pts * f.time_base, f.to_ndarray(format="rgb24")[64, 64, 0]) for f in c.decode(video=0)]
    assert [float(p) for p, _ in decoded] == pytest.approx([k / 25 for k in range(30)])
    red = np.array([r for _, r in decoded], dtype=float)
    assert np.abs(red - np.arange(30) * 8).max() < 6  # frame k decodes where frame k was written


def test_video_writer_rejects_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="even"):
        VideoWriter(tmp_path / "o.mp4", size=255)
    with pytest.raises(ValueError, match=r"\.mp4"):
        VideoWriter(tmp_path / "o.avi", size=256)
    with VideoWriter(tmp_path / "o.mp4", size=64) as w:
        with pytest.raises(ValueError, match="uint8"):
            w.write_frames(np.zeros((1, 64, 64, 3), np.float32))
        w.write_frames(np.zeros((2, 64, 64, 3), np.uint8))
    assert probe_video(tmp_path / "o.mp4").frames == 2


# ---- unusual and bad inputs (issue 28): built here from code, every refusal one line that names the problem -----


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png(path, width: int, height: int, *, rows: np.ndarray | None = None, bits: int = 8, color: int = 0) -> None:
    """A PNG written by hand: ``rows`` (H, W[, C]) as its pixels, or a blank (all-zero) picture of any size,
    compressed in pieces so a 169 Mpx one takes a fraction of a second and little memory."""
    compress = zlib.compressobj(1)
    if rows is None:
        line = width * {0: 1, 2: 3, 6: 4}[color] * bits // 8 + 1
        block = bytes(line * 1000)
        body = b"".join(compress.compress(block[: line * min(1000, height - y)]) for y in range(0, height, 1000))
    else:
        dtype = ">u2" if bits == 16 else "u1"
        body = compress.compress(b"".join(b"\x00" + r.astype(dtype).tobytes() for r in rows))
    header = struct.pack(">IIBBBBB", width, height, bits, color, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", body + compress.flush())
                + png_chunk(b"IEND", b""))


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def make_gray16(path):
    Image.fromarray(np.full((40, 40), 40000, np.uint16)).save(path)  # Pillow's own convert clips it to white


def make_rgb16(path):
    write_png(path, 40, 40, rows=np.tile([65535, 32896, 0], (40, 40, 1)).reshape(40, 120), bits=16, color=2)


def make_animated_gif(path):
    first, second = (Image.fromarray(np.full((40, 40, 3), v, np.uint8)) for v in ((200, 0, 0), (0, 0, 200)))
    first.save(path, save_all=True, append_images=[second], duration=100)


def make_palette(path, rgb):
    picture = Image.new("P", (40, 40), 1)
    picture.putpalette([0, 0, 0, *rgb] + [0] * 762)
    picture.save(path)


IMAGE_KINDS = {  # name: (make(path), suffix, the RGB every pixel must load as)
    "grayscale": (lambda p: Image.fromarray(np.full((40, 40), 90, np.uint8)).save(p), ".png", (90, 90, 90)),
    "rgba half transparent": (lambda p: Image.new("RGBA", (40, 40), (0, 0, 0, 128)).save(p), ".png",
                              (127, 127, 127)),
    "cmyk jpeg": (lambda p: Image.new("CMYK", (40, 40), (0, 255, 255, 0)).save(p, quality=95), ".jpg", (255, 0, 0)),
    "16-bit grayscale png": (make_gray16, ".png", (156, 156, 156)),
    "16-bit rgb png": (make_rgb16, ".png", (255, 128, 0)),
    "animated gif: the first frame": (make_animated_gif, ".gif", (200, 0, 0)),
    "palette png": (lambda p: make_palette(p, (10, 120, 230)), ".png", (10, 120, 230)),
}


@pytest.mark.parametrize("kind", list(IMAGE_KINDS))
def test_image_kinds_load_as_their_colours(tmp_path, kind):
    make, suffix, rgb = IMAGE_KINDS[kind]
    path = tmp_path / f"picture{suffix}"
    make(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing of Pillow's leaks
        pixels = read_image(path).pixels
    assert pixels.shape == (40, 40, 3) and pixels.dtype == np.uint8
    assert np.abs(pixels.astype(int) - rgb).max() <= 2, pixels[0, 0]


def corrupt_png(path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    data[200:400] = bytes(200)  # inside the compressed pixels
    path.write_bytes(bytes(data))


def truncated_jpeg(path):
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path, quality=90)
    path.write_bytes(path.read_bytes()[:600])


BAD_IMAGES = {  # name: (make(path), suffix, what the message says)
    "empty file": (lambda p: p.write_bytes(b""), ".png", "is empty (0 bytes)"),
    "text named .png": (lambda p: p.write_text("not a picture\n"), ".png", "is not an image Pillow can read"),
    "corrupt png": (corrupt_png, ".png", "is a corrupt or truncated image"),
    "truncated jpeg": (truncated_jpeg, ".jpg", "is a corrupt or truncated image"),
    "float tiff": (lambda p: Image.new("F", (40, 40), 0.5).save(p), ".tif", "32-bit float pixels"),
}


@pytest.mark.parametrize("kind", list(BAD_IMAGES))
def test_bad_image_files_are_one_line_errors(tmp_path, kind):
    make, suffix, message = BAD_IMAGES[kind]
    path = tmp_path / f"bad{suffix}"
    make(path)
    with pytest.raises(ValueError) as err:
        read_image(path)
    assert message in one_line_error(err) and str(path) in str(err.value)


def test_a_tiny_image_is_refused_with_the_minimum_size(tmp_path):
    Image.new("RGB", (8, 8), (50, 60, 70)).save(tmp_path / "tiny.png")
    assert read_image(tmp_path / "tiny.png").pixels.shape == (8, 8, 3)  # reading it is fine; using it is not
    with pytest.raises(ValueError, match="8x8 px; its shorter side must be at least 32 px"):
        load_image(tmp_path / "tiny.png", resolution=64)
    with pytest.raises(FaceError, match=r"8x8 px: too small to hold a face .* at least 32 px"):
        load_portrait(tmp_path / "tiny.png", resolution=64, crop=CropConfig())


@pytest.mark.parametrize(("size", "message"), [
    ((13000, 13000), "is 169 Mpx, over the 64 Mpx this loader decodes; downscale it first"),  # over Pillow's warning
    ((14000, 14000), "is 196 Mpx, over the 64 Mpx"),  # over Pillow's error
    ((9000, 8000), "is 9000x8000 px (72 Mpx), over the 64 Mpx"),  # under Pillow's limits, over ours
])
def test_huge_pictures_are_refused_from_the_header_before_decoding(tmp_path, size, message):
    """A real, valid 169 Mpx PNG (blank, so it is small on disk): refused in milliseconds with its size, never
    called corrupt, and no DecompressionBombWarning escapes (decoding it takes ~0.7 s and 169 MB as greyscale,
    the 2.3 GB of the report as RGB)."""
    path = tmp_path / "huge.png"
    write_png(path, *size)
    start = time.perf_counter()
    with warnings.catch_warnings(), pytest.raises(ValueError) as err:
        warnings.simplefilter("error")
        read_image(path, max_side=4096)
    assert time.perf_counter() - start < 0.2
    assert message in one_line_error(err) and "corrupt" not in str(err.value)


@pytest.mark.parametrize("pillow_limit", [None, 1_500_000, 500_000])  # ours only; Pillow warns; Pillow refuses
def test_jpegs_over_the_limit_decode_reduced_and_others_are_refused(tmp_path, monkeypatch, pillow_limit):
    """The limits lowered so a small picture plays a huge one: a 1600x1200 JPEG over a 1 Mpx limit decodes at
    half scale (libjpeg), whatever Pillow's own guard says; the same picture as a PNG is refused."""
    monkeypatch.setattr(image_in, "MAX_PIXELS", 1_000_000)
    if pillow_limit is not None:
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pillow_limit)
    picture = np.zeros((1200, 1600, 3), np.uint8)
    picture[:, :800] = (200, 30, 30)
    Image.fromarray(picture).save(tmp_path / "big.jpg", quality=90)
    Image.fromarray(picture).save(tmp_path / "big.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = read_image(tmp_path / "big.jpg")
        assert loaded.original_size == (1600, 1200) and loaded.pixels.shape == (600, 800, 3) and loaded.downscaled
        assert np.abs(loaded.pixels[300, 100].astype(int) - (200, 30, 30)).max() < 8
        assert read_image(tmp_path / "big.jpg", max_side=200).pixels.shape == (150, 200, 3)  # 1/8, then resized
        with pytest.raises(ValueError, match="over the 1 Mpx this loader decodes; downscale it first"):
            read_image(tmp_path / "big.png")


def write_float_wav(path, wave: np.ndarray, rate: int) -> None:
    """A 32-bit float wav of (channels, n) samples (values beyond ±1, NaN and inf kept as they are)."""
    wave = np.atleast_2d(wave).astype(np.float32)
    layout = {1: "mono", 2: "stereo"}[wave.shape[0]]
    with av.open(str(path), "w") as c:
        s = c.add_stream("pcm_f32le", rate=rate)
        s.layout = layout
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave.T.reshape(1, -1)), format="flt", layout=layout)
        frame.sample_rate, frame.pts, frame.time_base = rate, 0, Fraction(1, rate)
        c.mux(s.encode(frame))
        c.mux(s.encode(None))


@pytest.mark.parametrize(("rate", "channels"), [(8000, 1), (11025, 2), (22050, 3), (32000, 4), (44100, 5),
                                                (48000, 6), (16000, 7), (24000, 8)])
def test_any_rate_and_one_to_eight_channels_decode_to_the_signal(tmp_path, rate, channels):
    """(8 channels crashed the process before: PyAV 18 reads one plane too many of planar 8-channel frames.)"""
    write_wav(tmp_path / "a.wav", np.stack([tone(0.5, rate, 300, 0.5)] * channels), sample_rate=rate)
    assert probe_audio(tmp_path / "a.wav").channels == channels
    wave = read_audio(tmp_path / "a.wav")
    assert wave.size == 8000
    assert np.abs(wave[200:7800] - tone(0.5, 16000, 300, 0.5)[200:7800]).max() < 1e-3


def test_short_silent_and_empty_audio(tmp_path):
    write_wav(tmp_path / "short.wav", tone(0.1, 44100), sample_rate=44100)
    assert read_audio(tmp_path / "short.wav").size == 1600  # 0.1 s: one short block
    write_wav(tmp_path / "silence.wav", np.zeros(24000), sample_rate=48000)
    assert not read_audio(tmp_path / "silence.wav").any()
    (tmp_path / "empty.mp3").write_bytes(b"")
    with pytest.raises(ValueError) as err:
        probe_audio(tmp_path / "empty.mp3")
    assert "empty.mp3 is empty (0 bytes)" in one_line_error(err)
    with VideoWriter(tmp_path / "mute.mp4", size=32, audio=False) as w:
        w.write_frames(np.zeros((3, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError) as err:
        read_audio(tmp_path / "mute.mp4")
    assert "mute.mp4 has no audio stream (a video without sound)" in one_line_error(err)


def test_float_audio_beyond_full_scale_is_clipped_with_one_warning(tmp_path, caplog):
    loud = tone(2.0, 16000, 200, 1.5)
    write_float_wav(tmp_path / "loud.wav", loud, 16000)
    with caplog.at_level(logging.WARNING, logger="fada_rt.media"):
        wave = read_audio(tmp_path / "loud.wav")
    assert wave.max() == 1.0 and wave.min() == -1.0
    assert np.array_equal(wave, np.clip(loud, -1, 1))
    (record,) = caplog.records  # one warning, not one per block
    assert "loud.wav has samples beyond ±1" in record.message and "reaching 1.50" in record.message
    caplog.clear()
    write_wav(tmp_path / "full.wav", np.sign(tone(1.0, 44100, 100)), sample_rate=44100)  # full-scale square
    with caplog.at_level(logging.WARNING, logger="fada_rt.media"):
        assert np.abs(read_audio(tmp_path / "full.wav")).max() <= 1.0  # resampling's overshoot: clipped
    assert not caplog.records  # an integer file cannot go beyond full scale: nothing to say


@pytest.mark.parametrize(("bad", "rate", "at"), [(np.nan, 16000, 1.25), (np.inf, 44100, 2.5), (-np.inf, 8000, 0.0)])
def test_non_finite_audio_is_refused_before_the_first_block(tmp_path, bad, rate, at):
    wave = np.stack([tone(3.0, rate), tone(3.0, rate)])
    wave[1, round(at * rate)] = bad  # in the right channel only
    write_float_wav(tmp_path / "bad.wav", wave, rate)
    blocks = iter_audio(tmp_path / "bad.wav")
    with pytest.raises(ValueError) as err:
        next(blocks)  # float wavs are scanned first: nothing is handed on, so nothing gets written
    message = one_line_error(err)
    assert f"bad.wav has a NaN or infinite sample at {at:.2f} s" in message and "re-export the audio" in message


def write_coded(path, seconds: float = 7.0) -> None:
    codec, rate = {".mp3": ("libmp3lame", 44100), ".aac": ("aac", 44100), ".m4a": ("aac", 48000),
                   ".opus": ("libopus", 48000)}[path.suffix]
    wave = tone(seconds, rate, 300, 0.5)
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=rate)
        s.layout = "mono"
        fmt = "flt" if codec == "libopus" else "fltp"
        frame = av.AudioFrame.from_ndarray(wave[None], format=fmt, layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = rate, 0, Fraction(1, rate)
        c.mux(s.encode(frame))
        c.mux(s.encode(None))


@pytest.mark.parametrize(("suffix", "damage", "outcome", "message"), [
    (".mp3", "cut", 2.3, "decoded 2.30 s of the 7.00 s its container declares: the file is probably truncated"),
    (".aac", "cut", 2.3, "its last packet does not decode"),
    (".m4a", "cut", None, "cannot read audio from"),  # the index (moov) is at the end: nothing to read
    (".opus", "cut", 2.0, None),  # ogg declares the length of what is there: nothing to notice, nothing lost
    (".mp3", "zeros", None, "failed after 2.30 s"),
    (".aac", "zeros", None, "failed after 2.3"),
    (".m4a", "zeros", None, "failed after 2.3"),
    (".opus", "zeros", 4.0, "decoded 4.00 s of the 7.01 s its container declares: the file is probably truncated"),
])
def test_truncated_and_corrupt_compressed_audio(tmp_path, caplog, suffix, damage, outcome, message):
    """Encoded here, then cut to its first third or its middle third zeroed. A decode error in the middle of a
    file is an error; a file that ends early gives a warning and the audio that decoded."""
    path = tmp_path / f"speech{suffix}"
    write_coded(path)
    data = path.read_bytes()
    third = len(data) // 3
    path.write_bytes(data[:third] if damage == "cut" else data[:third] + bytes(third) + data[2 * third:])
    with caplog.at_level(logging.WARNING, logger="fada_rt.media"):
        if outcome is None:
            with pytest.raises(ValueError) as err:
                read_audio(path)
            text = one_line_error(err)
            assert "corrupt or truncated" in text and "re-export or re-download" in text
        else:
            assert read_audio(path).size / 16000 == pytest.approx(outcome, abs=0.1)
            text = " ".join(r.message for r in caplog.records)
            assert len(caplog.records) == (message is not None)
    assert message is None or message in text


@pytest.mark.parametrize(("shape", "message"), [
    ((2, 48000), r"got \(2, 48000\); pass \(samples, channels\), e\.g\. pcm\.T"),
    ((8, 100), r"looks like \(channels, samples\)"),
    ((100, 100), "with 1 to 8 channels"),
    ((100, 0), "has no channels"),
    ((2, 2, 2), r"\(samples,\) or \(samples, channels\)"),
])
def test_pcm_arrays_of_the_wrong_layout_are_refused(shape, message):
    with pytest.raises(ValueError, match=message):
        to_mono_float(np.zeros(shape, np.float32))


def test_pcm_layout_rule_and_non_finite_samples():
    """(n, c) with 1 to 8 channels is (samples, channels) at any length, a stream's few last samples included."""
    assert to_mono_float(np.array([[0.2, 0.4]] * 3, np.float32)) == pytest.approx([0.3] * 3)
    assert to_mono_float(np.zeros((0, 2), np.int16)).shape == (0,)
    assert to_mono_float(np.zeros((48000, 8), np.int16)).shape == (48000,)
    pcm = np.zeros((48000, 2), np.float32)
    pcm[12000, 1] = np.inf
    with pytest.raises(ValueError, match=r"the array has a NaN or infinite sample at 0\.250 s \(sample 12000\); "
                                         r"repair or re-export"):
        to_mono_float(pcm, sample_rate=48000)
    with pytest.raises(ValueError, match=r"the array has a NaN or infinite sample at 0\.500 s"):
        PcmConverter().convert(np.r_[np.zeros(8000), np.nan].astype(np.float32), 16000)
