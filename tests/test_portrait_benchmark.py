"""benchmarks.portrait on a reduced set (the astronaut photo and the blank picture, no CNN, half a second of
speech): the tables' rows, what the detectors find, the JSON round trip. No timing is asserted."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.portrait import detector_rows, run_benchmark, to_markdown, write_results
from benchmarks.portrait_detectors import CANDIDATES, Found, score
from benchmarks.portrait_scenes import Scene

SCENES = ("astronaut", "blank")
CHEAP = ("hog", "hog-upright", "haar")


@pytest.fixture(scope="module")
def result() -> dict:
    return run_benchmark(scenes=SCENES, candidates=CHEAP, frame_scenes=("astronaut",), repeats=1, frames=3, roll=False,
                         encode_frames=3, audio_seconds=0.5, threads=1, log=lambda line: None)


def test_detector_rows(result):
    rows = {(r["scene"], r["candidate"]): r for r in result["detectors"]}
    assert sorted(rows) == sorted((s, c) for s in SCENES for c in CHEAP)
    for c in ("hog", "hog-upright"):
        astronaut = rows["astronaut", c]
        assert astronaut["found"] == astronaut["expected"] == 1 and astronaut["correct"]
        assert astronaut["eye_errors"][0] < 0.1
    for c in CHEAP:
        blank = rows["blank", c]
        assert blank["expected"] == 0 and blank["found"] == 0 and blank["extra"] == 0 and blank["correct"]
        assert not rows["astronaut", c]["skipped"] and rows["astronaut", c]["ms"] > 0
    summary = {m["candidate"]: m for m in result["summary"]}
    assert list(summary) == list(CHEAP)
    assert summary["hog"]["scenes"] == 2 and summary["hog"]["correct"] == 2 and summary["hog"]["extra"] == 0
    assert summary["hog"]["mean_eye_error"] < 0.1 and summary["hog"]["ms_4k"] is None


def test_frame_rows_and_model(result):
    model = result["model"]
    assert model["frames"] > 0 and model["ms_per_frame"] > 0 and model["resolution"] == 64
    tiny, sd15 = result["frames"]
    assert (tiny["scene"], tiny["crop"], tiny["resolution"]) == ("astronaut", "tiny", 64)
    assert (sd15["crop"], sd15["resolution"]) == ("sd15", 512)
    for row in (tiny, sd15):
        assert row["error"] is None and row["size"] == [512, 512]
        assert row["paste_ms"] > 0 and row["encode_ms"] > 0 and row["crop_ms"] > 0
    assert tiny["paste_vs_model"] == pytest.approx(tiny["paste_ms"] / model["ms_per_frame"])
    assert sd15["paste_vs_model"] is None  # no 512 px model on the CPU to compare with


def test_markdown_and_json_round_trip(result, tmp_path):
    text = to_markdown(result)
    for name in SCENES:
        assert f"| {name} | " in text
    for c in CHEAP:
        assert f"| {CANDIDATES[c]} | " in text
    assert CANDIDATES["cnn"] not in text
    assert "| astronaut | 512x512 | tiny (64 px) |" in text and "| astronaut | 512x512 | sd15 (512 px) |" in text
    md = write_results(result, tmp_path)
    assert md.read_text() == text + "\n"
    assert json.loads((tmp_path / "portrait.json").read_text()) == result


def test_score_matching():
    truth = np.array([[100.0, 100.0], [140.0, 100.0]])  # eyes 40 px apart
    s = Scene("synthetic", np.zeros((200, 200, 3), np.uint8), (truth,))
    near = Found((80, 70, 160, 160), truth + np.array([[2.0, 0.0], [0.0, -6.0]]))
    far = Found((0, 0, 40, 40), np.array([[10.0, 10.0], [30.0, 10.0]]))
    no_eyes = Found((80, 60, 160, 150), None)  # a box around the face, its eyes not found
    assert score(s, [near])["eye_errors"] == [pytest.approx(6 / 40)] and not score(s, [near])["correct"]
    r = score(s, [far, near])
    assert (r["found"], r["matched"], r["missed"], r["extra"]) == (2, 1, 0, 1) and not r["correct"]
    r = score(s, [far])
    assert (r["missed"], r["extra"], r["eye_errors"]) == (1, 1, [None])
    r = score(s, [no_eyes])
    assert (r["matched"], r["landmark_failures"], r["eye_errors"], r["correct"]) == (1, 1, [None], False)
    blank = score(Scene("blank", s.image, ()), [])
    assert blank["correct"] and blank["eye_errors"] == []


def test_cnn_skipped_over_the_pixel_limit():
    rows = detector_rows(scenes=("blank",), candidates=("cnn",), repeats=1, cnn_max_pixels=0, log=lambda line: None)
    assert rows == [{"scene": "blank", "size": [640, 480], "candidate": "cnn", "skipped": "too slow", "correct": None}]
