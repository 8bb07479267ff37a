"""fada_rt.face: detection, alignment, crops and paste-back on real photos (scikit-image's astronaut,
matplotlib's Grace Hopper) and composites with known true eye positions (benchmarks/portrait_scenes.py)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from benchmarks.portrait_scenes import NO_FACE, cartoon, photo, scene
from fada_rt.config import CropConfig, get_preset
from fada_rt.face import (
    MAX_SIDE,
    Compositor,
    FaceDetector,
    FaceError,
    centre_transform,
    face_transform,
    load_portrait,
    seam_ratio,
    warp_crop,
)
from fada_rt.media import read_image

TINY = get_preset("tiny")
EYE_TOLERANCE = 0.10  # of the true eye distance: hand-marked pupils vs dlib's eye-corner means
ANGLE_TOLERANCE = 3.0  # degrees


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector()


@pytest.mark.parametrize("name", ["astronaut", "grace_hopper", "off_centre_1600x900", "rotated_20", "rotated_35",
                                  "small_in_4k", "two_faces"])
def test_faces_and_eye_lines_are_where_they_should_be(detector, name):
    s = scene(name)
    faces = detector(s.image)
    assert len(faces) == len(s.eyes)
    for face, true in zip(faces, s.eyes):  # both largest first
        distance = np.linalg.norm(true[1] - true[0])
        found = np.stack([face.left_eye, face.right_eye])
        assert np.abs(found - true).max() < EYE_TOLERANCE * distance, (found, true)
        true_angle = np.degrees(np.arctan2(true[1, 1] - true[0, 1], true[1, 0] - true[0, 0]))
        assert abs(face.angle - true_angle) < ANGLE_TOLERANCE
        x0, y0, x1, y1 = face.box  # the box holds both eyes and is a face's size
        assert (x0 < true[:, 0]).all() and (true[:, 0] < x1).all() and (y0 < true[:, 1]).all() and (true[:, 1] < y1).all()
        assert 1.5 * distance < face.size < 4.5 * distance


@pytest.mark.parametrize("name", NO_FACE)
def test_pictures_without_a_face_get_a_clear_error(name, tmp_path):
    path = tmp_path / f"{name}.png"
    Image.fromarray(scene(name).image).save(path)
    with pytest.raises(FaceError, match=rf"no face found in {path} \(\d+x\d+ px\).*crop the picture closer.*--crop centre"):
        load_portrait(path, resolution=64, crop=TINY.crop)


def test_a_cartoon_at_any_size_is_not_a_face(detector):
    """Documented behaviour: drawings are not found (docs/portraits.md); the error above follows."""
    for size in (128, 512, 1024):
        assert detector(cartoon(size)) == []


def test_alignment_puts_the_eyes_where_the_crop_config_says():
    crop, size = CropConfig(eye_distance=0.3, eye_y=0.4), 100
    left, right = np.array([130.0, 80.0]), np.array([170.0, 60.0])  # a tilted face
    m = face_transform(left, right, crop=crop, size=size)
    eyes = np.stack([left, right]) @ m[:, :2].T + m[:, 2]
    np.testing.assert_allclose(eyes, [[49.5 - 15, 40], [49.5 + 15, 40]], atol=1e-9)


def test_centre_transform_is_the_centre_square_pixel_for_pixel():
    image = np.random.default_rng(0).integers(0, 256, (50, 100, 3), dtype=np.uint8)
    m = centre_transform(100, 50, size=50)
    np.testing.assert_array_equal(warp_crop(image, m, 50), image[:, 25:75])


def test_crop_then_paste_gives_the_picture_back():
    """Round trip at a resolution near the face's own: the pasted crop is the picture within resampling error,
    and nothing outside the paste region changes."""
    s = scene("astronaut")
    p = load_portrait(s.image, resolution=192, crop=CropConfig())
    out = p.frame(p.crop)
    alpha = p.compositor.full_alpha()
    assert np.abs(out.astype(int) - s.image)[alpha == 0].max() == 0
    assert np.abs(out.astype(float) - s.image)[alpha > 0.5].mean() < 4.0


@pytest.mark.parametrize("name", ["off_centre_1600x900", "rotated_20", "two_faces"])
def test_paste_back_keeps_everything_outside_exactly_and_leaves_no_seam(name):
    s = scene(name)
    p = load_portrait(s.image, resolution=TINY.resolution, crop=TINY.crop)
    assert p.size == (s.image.shape[1], s.image.shape[0]) and p.image.shape == s.image.shape
    rng = np.random.default_rng(1)  # a "generated" face: brighter, noisy, like a model's own rendering
    generated = np.clip(p.crop.astype(int) + 25 + rng.integers(-6, 7, p.crop.shape), 0, 255).astype(np.uint8)
    out = p.frame(generated)
    alpha = p.compositor.full_alpha()
    assert np.abs(out.astype(int) - s.image)[alpha == 0].max() == 0  # max abs diff 0 outside
    assert (alpha > 0).sum() < 0.5 * alpha.size and np.abs(out.astype(int) - s.image)[alpha > 0.9].mean() > 5
    matched = seam_ratio(out, s.image, alpha)
    hard = Compositor(p.image, p.transform, TINY.resolution, reference=None, feather=0.004).paste(
        np.clip(generated.astype(int) + 35, 0, 255).astype(np.uint8))
    assert matched < 1.05 < seam_ratio(hard, s.image, alpha)  # the measure sees a step when there is one


def test_the_largest_face_by_default_and_face_index_to_choose(tmp_path):
    s = scene("two_faces")
    largest = load_portrait(s.image, resolution=64, crop=TINY.crop)
    other = load_portrait(s.image, resolution=64, crop=TINY.crop, face_index=1)
    assert largest.face_index == 0 and len(largest.faces) == 2
    assert np.abs(largest.faces[0].left_eye - s.eyes[0][0]).max() < 10  # Grace Hopper, the larger face
    assert np.abs(other.faces[1].left_eye - s.eyes[1][0]).max() < 10
    assert "[1]" in other.describe_faces() and "<- used" in other.describe_faces().splitlines()[2]
    with pytest.raises(FaceError, match=r"--face-index 2 is out of range: 2 face\(s\).*\[0\] box.*\[1\] box"):
        load_portrait(s.image, resolution=64, crop=TINY.crop, face_index=2)


def test_a_face_too_small_for_the_model_names_its_size():
    small = np.asarray(Image.fromarray(photo("astronaut")).resize((256, 256), Image.Resampling.LANCZOS))
    assert load_portrait(small, resolution=64, crop=TINY.crop).faces  # fine for the 64 px model
    with pytest.raises(FaceError, match=r"too small for the model: its eyes are 2\d px apart, so its crop is \d+ px, "
                                        r"under the 128 px the 512 px model needs"):
        load_portrait(small, resolution=512, crop=CropConfig())


def test_a_huge_picture_is_downscaled_with_a_note(tmp_path):
    """10000x10000: read at --max-side (JPEG decodes reduced), the face found there, the note says so."""
    big = np.full((10000, 10000, 3), 200, np.uint8)
    big[3000:7096, 2000:6096] = np.asarray(Image.fromarray(photo("astronaut")).resize((4096, 4096)))
    path = tmp_path / "huge.jpg"
    Image.fromarray(big).save(path, quality=90)
    del big
    assert read_image(path, max_side=MAX_SIDE).pixels.shape == (MAX_SIDE, MAX_SIDE, 3)
    p = load_portrait(path, resolution=64, crop=TINY.crop, max_side=1500)
    assert p.image.shape == (1500, 1500, 3) and len(p.faces) == 1
    assert p.note == f"{path} is 10000x10000 px; downscaled to 1500x1500 (--max-side 1500)"
    eyes = (np.array(scene("astronaut").eyes[0]) * 8 + [2000, 3000] + 0.5) * 0.15 - 0.5
    assert np.abs(np.stack([p.faces[0].left_eye, p.faces[0].right_eye]) - eyes).max() < 3


def test_odd_sides_are_padded_for_video():
    image = np.ascontiguousarray(photo("astronaut")[:511, :509])
    p = load_portrait(image, resolution=64, crop=TINY.crop)
    assert p.image.shape == (512, 510, 3) and "padded to 510x512" in p.note
    np.testing.assert_array_equal(p.image[:511, :509], image)


def test_the_api_streams_the_whole_picture_with_the_face_pasted_back():
    """The shipped tiny student on a real photo off-centre in 1600x900: every frame is the picture's size and
    exactly the picture outside the paste region; the face moves; no seam."""
    from fada_rt.api import StreamingAvatar

    s = scene("off_centre_1600x900")
    avatar = StreamingAvatar(s.image, realtime=False, threads=1)
    t = np.arange(16000) / 16000
    avatar.push_audio((0.3 * np.sin(2 * np.pi * 200 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32),
                      16000)
    avatar.end_audio()
    frames = [frame.image for frame in avatar]
    alpha = avatar.portrait.compositor.full_alpha()
    assert len(frames) == 25 and all(f.shape == s.image.shape for f in frames)
    assert max(np.abs(f.astype(int) - s.image)[alpha == 0].max() for f in frames) == 0
    assert np.abs(frames[0].astype(int) - frames[12])[alpha > 0].mean() > 0.5  # the face moves
    assert max(seam_ratio(f, s.image, alpha) for f in frames) < 1.05
    crops = StreamingAvatar(s.image, realtime=False, output="crop", pipeline=avatar.pipeline)
    crops.push_audio(np.zeros(1600, np.float32), 16000)
    crops.end_audio()
    assert {f.image.shape for f in crops} == {(64, 64, 3)}
