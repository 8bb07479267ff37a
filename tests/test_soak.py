"""The soak benchmark (benchmarks/soak.py, issue 28): rows, slope and verdict on known values, and a short
soak of the real live process end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

import benchmarks.soak as soak
import benchmarks.soak_report as soak_report
from fada_rt.media import SAMPLE_RATE, probe_audio, read_audio
from fada_rt.preview import StatsLog


def sample(wall: float, rss: float, cpu: float = 0.0) -> soak_report.Sample:
    return soak_report.Sample(wall=wall, rss_mb=rss, fds=5, open_files=3, threads=12, cpu_s=cpu, load1=1.0)


def report(wall: float, frames: int, speech: int, av: tuple[float, float, float], latency: float | None,
           dropped: int = 0, late: int = 0) -> dict:
    lat = (None, None, None) if latency is None else (latency, latency, latency)
    return {"wall": wall, "kind": "interval", "frames": frames, "speech_frames": speech, "idle_frames": frames - speech,
            "dropped_frames": dropped, "late_frames": late, "rtf": 0.9, "recorded_frames": frames,
            **dict(zip(("av_offset_ms_last", "av_offset_ms_mean", "av_offset_ms_max"), av)),
            **dict(zip(("latency_ms_last", "latency_ms_mean", "latency_ms_max"), lat))}


def rows_with_rss(rss: list[float]) -> list[dict]:
    return [{"row": k + 1, "minute": float(k + 1), "rss_mb": v, "fds": 5, "threads": 12} for k, v in enumerate(rss)]


def recording(frames: int = 100, *, audio: float | None = 4.0, gaps: int = 0) -> soak_report.RecordingCheck:
    return soak_report.RecordingCheck(path="x.mp4", frames=frames, fps=25.0, video_duration=frames / 25, audio_duration=audio,
                               video_codec="h264", audio_codec="aac", pts_gaps=gaps, pts_repeats=0)


def test_rss_slope_is_least_squares_over_the_rows_after_the_first():
    rss = [300.0, 420.0, 420.4, 421.1, 421.3, 422.0]  # the first (warm-up) row is far below: left out
    rows = rows_with_rss(rss)
    expected = np.polyfit([r["minute"] for r in rows[1:]], rss[1:], 1)[0]
    assert soak_report.rss_slope(rows) == pytest.approx(expected)
    assert soak_report.rss_slope(rows_with_rss([300.0, 420.0])) is None  # one row after the warm-up: no slope


@pytest.mark.parametrize(("rss", "av", "exit_code", "rec", "met"), [
    ([500, 510, 510.2, 510.4], 12.0, 143, recording(), [True, True, True, True]),
    ([500, 510, 512, 514], 12.0, 143, recording(), [False, True, True, True]),  # 2 MB/min
    ([500, 510, 510.2, 510.4], 55.0, 143, recording(), [True, False, True, True]),
    ([500, 510, 510.2, 510.4], 12.0, 143, recording(99, audio=99 / 25), [True, True, False, False]),  # one lost
    ([500, 510, 510.2, 510.4], 12.0, 143, recording(gaps=2), [True, True, False, True]),
    ([500, 510, 510.2, 510.4], 12.0, 143, recording(audio=3.9), [True, True, False, True]),  # audio 2.5 frames short
    ([500, 510, 510.2, 510.4], 12.0, 0, recording(), [True, True, True, False]),  # ended by itself, no SIGTERM
    ([500, 510, 510.2, 510.4], 12.0, 143, None, [True, True, False, False]),  # no recording
    ([500, 510], 12.0, 143, recording(), [None, True, True, True]),  # too short for a slope
])
def test_assess_checks_each_target(rss, av, exit_code, rec, met):
    rows = [r | {"av_offset_ms_max": av / 2} for r in rows_with_rss(rss)]
    final = {"emitted": 97, "av_offset_ms_max": av, "dropped_frames": 7, "late_frames": 3}  # + 3 held slots: 100
    verdict = soak_report.assess(rows=rows, final=final, exit_code=exit_code, recording=rec)
    assert [t["met"] for t in verdict["targets"]] == met
    assert verdict["figures"]["av_offset_ms_max_abs"] == av
    assert verdict["figures"]["clock_dropped_frames"] == 7  # called for by the clock: reported, not counted


def test_uncalled_drops_add_up_their_parts():
    verdict = soak_report.assess(rows=[], final={"emitted": 95, "late_frames": 5}, exit_code=143,
                          recording=recording(98, audio=3.86, gaps=1))  # 95 emitted + 5 skipped slots held = 100
    assert verdict["figures"]["uncalled_drops"] == {"emitted_not_recorded": 2, "pts_gaps": 1, "audio_short_frames": 1}
    assert verdict["targets"][2]["measured"].startswith("4 ")
    assert soak_report.assess(rows=[], final=None, exit_code=None, recording=None)["targets"][2]["met"] is None


def test_rows_aggregate_samples_and_reports_per_interval():
    t0 = 1000.0
    samples = [sample(998.0, 400.0, cpu=5.0)]  # during the model load: the base of the first row's CPU
    samples += [sample(t0 + t, 500.0 + t / 10, cpu=5.0 + 0.5 * (t + 2)) for t in range(0, 20, 2)]
    records = [report(t0 + 1, 25, 10, (10.0, 5.0, 12.0), 300.0),
               report(t0 + 2, 50, 35, (20.0, 15.0, 22.0), 500.0, dropped=2, late=1),
               report(t0 + 11, 75, 35, (30.0, 25.0, 32.0), None),  # no speech: no latency in it
               {"wall": t0 + 25, "kind": "final", "frames": 80}]  # not a row's
    edges = soak_report.row_edges(t0=t0, stop=t0 + 20.5, interval=10.0)
    assert edges == [t0, t0 + 10.0, t0 + 20.5]  # a 0.5 s tail joins the last row
    rows = soak_report.make_rows(samples=samples, records=records, edges=edges)
    first, second = rows
    assert first["minute"] == pytest.approx(10 / 60, abs=1e-3) and second["minute"] == pytest.approx(20.5 / 60, abs=1e-3)
    assert first["rss_mb"] == pytest.approx(500.8) and first["rss_mb_max"] == pytest.approx(500.8)
    assert first["fds"] == 5 and first["threads"] == 12 and first["samples"] == 5
    assert first["cpu_percent"] == pytest.approx(50.0)  # 0.5 CPU s per s, from the last sample before the row
    assert first["frames"] == 50 and first["frames_in"] == 50
    assert first["av_offset_ms_mean"] == pytest.approx((5.0 * 25 + 15.0 * 25) / 50, abs=0.05)  # weighted by frames
    assert first["latency_ms_mean"] == pytest.approx((300.0 * 10 + 500.0 * 25) / 35, abs=0.05)  # weighted by speech frames (0.1 ms)
    assert first["av_offset_ms_max"] == 22.0 and first["av_offset_ms_last"] == 20.0
    assert (first["dropped_frames"], first["late_frames"], first["idle_frames"]) == (2, 1, 15)
    assert second["frames_in"] == 25 and second["latency_ms_mean"] is None and second["latency_ms_max"] is None
    assert second["av_offset_ms_mean"] == 25.0 and second["unrecorded_frames"] == 0


def test_source_alternates_the_example_speech_with_silences(tmp_path):
    src = soak.make_source(path=tmp_path / "s.wav", seconds=25.0, silences=(1.0, 3.0))
    audio = read_audio(tmp_path / "s.wav")
    assert probe_audio(tmp_path / "s.wav").sample_rate == SAMPLE_RATE
    assert src.passes == 3 and src.seconds == pytest.approx(audio.size / SAMPLE_RATE)
    assert src.seconds == pytest.approx(3 * 7.0 + 1 + 3 + 1) and src.speech_seconds == pytest.approx(21.0)
    assert np.abs(audio[7 * SAMPLE_RATE + 100 : 8 * SAMPLE_RATE - 100]).max() == 0  # the first silence
    assert "1, 3 s of silence" in src.pattern and "78% speech" in src.pattern  # 14 s of 18


def test_jsonl_tail_reads_complete_lines_only(tmp_path):
    path = tmp_path / "r.jsonl"
    log = StatsLog(path)  # created empty at once
    tail = soak.JsonlTail(path)
    assert path.read_text() == "" and tail.poll() == []
    log.write({"frames": 3})
    with path.open("a") as f:
        f.write('{"kind": "interval", "fra')  # a line being written
    new = tail.poll()
    assert len(new) == 1 and new[0]["frames"] == 3 and new[0]["kind"] == "interval" and new[0]["wall"] > 0
    with path.open("a") as f:
        f.write('mes": 4}\n')
    assert tail.poll()[0]["frames"] == 4 and len(tail.records) == 2


def test_stats_log_refuses_an_unwritable_path(tmp_path):
    with pytest.raises(ValueError, match=r"--stats-jsonl .*cannot write it"):
        StatsLog(tmp_path / "missing" / "r.jsonl")


def test_config_and_cli_refuse_bad_values(capsys):
    with pytest.raises(ValueError, match="--minutes must be > 0"):
        soak.SoakConfig(minutes=0)
    with pytest.raises(SystemExit):
        soak.main(["--minutes", "1", "--interval", "10", "--sample-every", "6"])
    assert "fewer than two samples per --interval" in capsys.readouterr().err


@pytest.mark.slow
def test_a_short_soak_of_the_live_process(tmp_path):
    """15 s of the real live process: rows, SIGTERM (exit 143), the recording checked against the reports."""
    out, work = tmp_path / "out", tmp_path / "work"
    config = soak.SoakConfig(minutes=0.25, interval=5.0, sample_every=1.0)
    results = soak.run_soak(config=config, out=out, work=work, progress=None)
    data = json.loads((out / "soak.json").read_text())
    assert data["ended"] == "planned" and data["stop_signal"] is None
    rows = data["rows"]
    assert len(rows) == 3 and [r["row"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert r["rss_mb"] > 50 and r["threads"] > 0 and r["fds"] > 0 and r["samples"] >= 3 and r["reports"] >= 4
        assert r["frames_in"] > 0 and r["av_offset_ms_max"] is not None and r["unrecorded_frames"] == 0
    figures = data["summary"]["figures"]
    assert figures["exit_code"] == 143 and data["final"]["exit_code"] == 143
    rec = data["recording"]
    assert rec["playable"] and rec["audio_codec"] == "aac" and rec["pts_gaps"] == 0
    assert data["final"]["emitted"] == data["final"]["frames"] == figures["emitted_frames"] > 50
    assert rec["frames"] == figures["emitted_frames"] + data["final"]["late_frames"]  # + the skipped slots, held
    assert figures["uncalled_drops"] == {"emitted_not_recorded": 0, "pts_gaps": 0, "audio_short_frames": 0}
    expected = np.polyfit([r["minute"] for r in rows[1:]], [r["rss_mb"] for r in rows[1:]], 1)[0]
    assert figures["rss_slope_mb_per_min"] == pytest.approx(expected, abs=1e-3)
    assert [t["met"] for t in data["summary"]["targets"]][2:] == [True, True]
    assert results["rows"] == rows and sorted(p.name for p in work.iterdir()) == [
        "live.jsonl", "live.log", "soak.mp4", "source.wav"]  # the recording was finalised (no partial left)
    md = (out / "soak.md").read_text()
    for target in ("RSS slope", "< 1 MB/min", "A/V offset", "<= 40 ms", "drops not called by the clock",
                   "recording after SIGTERM", "exit 143"):
        assert target in md
    assert md.count("\n| 0.") + md.count("\n| 1.") >= 3  # a table row per interval
