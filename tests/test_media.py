"""Media in/out: the image policy, audio decoding of any format/rate/layout, the mp4 writer."""

from __future__ import annotations

import os
from fractions import Fraction

import av
import numpy as np
import psutil
import pytest
from PIL import Image

from fada_rt.media import (
    PcmConverter,
    VideoWriter,
    iter_audio,
    load_image,
    probe_audio,
    probe_video,
    read_audio,
    to_mono_float,
    write_wav,
)


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
