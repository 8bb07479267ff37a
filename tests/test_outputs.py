"""fada_rt.outputs: output paths checked before any work, written under a partial name, stop signals as a flag."""

from __future__ import annotations

import os
import signal
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest

from fada_rt.outputs import StopSignals, check_output, partial_path
from fada_rt.video_out import VideoWriter, probe_video

READ_ONLY = Path("/sys")  # not writable even by root (a chmod'ed folder is, for root)


def writable(folder: Path) -> bool:
    try:
        fd, probe = tempfile.mkstemp(dir=folder)
    except OSError:
        return False
    os.close(fd)
    os.unlink(probe)
    return True


needs_read_only = pytest.mark.skipif(not READ_ONLY.is_dir() or writable(READ_ONLY), reason="needs a read-only /sys")


def test_a_good_output_is_returned_and_nothing_is_created(tmp_path):
    assert check_output(tmp_path / "out.mp4") == tmp_path / "out.mp4"
    assert check_output(tmp_path / "new" / "deeper" / "out.MOV") == tmp_path / "new" / "deeper" / "out.MOV"
    assert list(tmp_path.iterdir()) == []  # the writability probe is gone, no folder was made


def test_existing_output_needs_overwrite(tmp_path):
    (tmp_path / "out.mp4").write_bytes(b"old")
    with pytest.raises(FileExistsError, match=r"out\.mp4 already exists; pass --overwrite to replace it, or choose"):
        check_output(tmp_path / "out.mp4")
    assert check_output(tmp_path / "out.mp4", overwrite=True) == tmp_path / "out.mp4"


@pytest.mark.parametrize("case", ["relative", "symlink", "hardlink", "absent input"])
def test_an_input_is_never_an_output(tmp_path, monkeypatch, case):
    audio = tmp_path / "talk.mp4"
    if case != "absent input":
        audio.write_bytes(b"input")
    out = {"relative": Path("talk.mp4"), "symlink": tmp_path / "link.mp4", "hardlink": tmp_path / "hard.mp4",
           "absent input": tmp_path / "sub" / ".." / "talk.mp4"}[case]
    monkeypatch.chdir(tmp_path)
    if case == "symlink":
        out.symlink_to(audio)
    elif case == "hardlink":
        os.link(audio, out)
    with pytest.raises(ValueError, match=r"is also an input of this run .* choose another --out"):
        check_output(out, inputs=(np.zeros(3), None, audio), overwrite=True)  # overwrite does not allow it


@pytest.mark.parametrize(("name", "message"), [
    ("dir", "is a directory; give a file name such as"),
    ("out.avi", r"must end in one of \.mp4, \.m4v, \.mov, \.mkv \(H\.264 \+ AAC\); e\.g\. out\.mp4"),
    ("afile/out.mp4", "afile is not a directory"),
])
def test_impossible_outputs_are_refused(tmp_path, name, message):
    (tmp_path / "dir").mkdir()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match=message) as info:
        check_output(tmp_path / name, flag="--record")
    assert str(info.value).startswith(f"--record {tmp_path / name}")


@needs_read_only
@pytest.mark.parametrize(("name", "message"), [("out.mp4", "cannot write to the directory /sys"),
                                               ("new/out.mp4", "cannot create the directory /sys/new in /sys")])
def test_read_only_places_are_refused(name, message):
    with pytest.raises(ValueError, match=message) as info:
        check_output(READ_ONLY / name)
    assert str(READ_ONLY / name) in str(info.value) and "choose a writable place" in str(info.value)


def test_video_writer_writes_a_partial_file_and_renames_it_when_closed(tmp_path):
    target = tmp_path / "v.mp4"
    target.write_bytes(b"the old file")
    with VideoWriter(target, size=32) as w:
        assert w.partial == partial_path(target) == tmp_path / ".v.partial.mp4"
        w.write_audio(np.zeros(1280, np.float32))
        w.write_frames(np.zeros((2, 32, 32, 3), np.uint8))
        assert w.partial.exists() and target.read_bytes() == b"the old file"  # replaced only when finalised
    assert w.written and not w.partial.exists()
    info = probe_video(target)
    assert info.frames == 2 and info.audio_codec == "aac"


def test_video_writer_without_frames_leaves_no_file(tmp_path):
    with VideoWriter(tmp_path / "v.mp4", size=32) as w:
        w.write_audio(np.zeros(1280, np.float32))
    assert not w.written and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 130)])
def test_stop_signals_set_a_flag_and_restore_the_handlers(signum, code):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    with StopSignals() as signals:
        assert not signals.event.is_set() and signals.exit_code is None
        os.kill(os.getpid(), signum)  # delivered to the main thread before kill returns to Python code
        signals.event.wait(5)
        os.kill(os.getpid(), signal.SIGTERM)  # a second signal does not change which one stopped the run
    assert signals.event.is_set() and signals.signum == signum and signals.exit_code == code
    assert signals.name == signal.Signals(signum).name
    assert {s: signal.getsignal(s) for s in before} == before


def test_stop_signals_off_the_main_thread_install_nothing():
    before = signal.getsignal(signal.SIGTERM)
    seen = []

    def run():
        with StopSignals() as signals:
            seen.append(signal.getsignal(signal.SIGTERM))
        seen.append(signals.signum)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen == [before, None]
