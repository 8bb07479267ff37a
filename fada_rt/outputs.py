"""Output safety shared by ``fada_rt.generate`` and ``fada_rt.live`` (issue 28): nothing lost, every bad output
path a clear error before any work starts.

* :func:`check_output` refuses, before a model is loaded, an output that could not be written or that would
  destroy something: a directory, an input of the same run, an existing file (unless ``overwrite``), an
  unsupported extension, a directory that cannot be created or written.
* :class:`~fada_rt.video_out.VideoWriter` writes to :func:`partial_path` (``.NAME.partial.mp4`` beside the target)
  and :func:`finish_output` renames it onto the target once the file is finalised, or removes it when it has
  no frames: the target is never a half-written file.
* :class:`StopSignals` turns SIGINT, SIGTERM and SIGHUP into a flag that the frame loops read between frames,
  so a service manager's stop finalises the file exactly like Ctrl-C; the exit code is ``128 + signum``.
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv")  # what VideoWriter writes (H.264 + AAC)
STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    s for s in (signal.SIGINT, getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None)


def check_input_file(path: Path, *, what: str) -> None:
    """An input file (``what``: "image", "audio file") that exists, is a file and is not empty, else one clear
    error naming it."""
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist")
    if not path.is_file():
        raise ValueError(f"{what} {path} is not a file")
    if path.stat().st_size == 0:
        raise ValueError(f"{what} {path} is empty (0 bytes); re-export or re-download it")


def check_output(path: str | Path, *, inputs: Iterable[Any] = (), overwrite: bool = False,
                 suffixes: tuple[str, ...] = VIDEO_SUFFIXES, flag: str = "--out") -> Path:
    """``path`` as a Path, once it is known to be writable without destroying anything.

    ``inputs``: the run's input files (anything that is not a str or Path, e.g. an image array, is skipped).
    ``flag``: the option that named the output, for the messages. Raises FileExistsError for an existing
    file without ``overwrite``, ValueError for the rest; each message names the path and what to do.
    Nothing is created (the directory's writability is probed with a temporary file that is removed).
    """
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"{flag} {path} is a directory; give a file name such as {target / 'out.mp4'}")
    for item in inputs:
        if isinstance(item, (str, Path)) and _same_file(target, Path(item)):
            raise ValueError(f"{flag} {target} is also an input of this run ({item}); writing it would destroy "
                             f"the input: choose another {flag}")
    if target.suffix.lower() not in suffixes:
        raise ValueError(f"{flag} {target} must end in one of {', '.join(suffixes)} (H.264 + AAC); "
                         f"e.g. {target.with_suffix(suffixes[0]).name}")
    if target.exists() or target.is_symlink():
        if not target.is_file():
            raise ValueError(f"{flag} {target} exists and is not a regular file; choose another {flag}")
        if not overwrite:
            raise FileExistsError(f"{flag} {target} already exists; pass --overwrite to replace it, or choose "
                                  f"another {flag}")
    _check_directory(target.absolute().parent, flag=flag, target=target)
    return target


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def _check_directory(folder: Path, *, flag: str, target: Path) -> None:
    """The directory exists and takes a new file, or its nearest existing ancestor would let it be created."""
    existing = folder
    while not existing.exists():
        if existing.is_symlink():  # a dangling link: mkdir would fail on it
            raise ValueError(f"{flag} {target}: {existing} is a broken symbolic link; choose another {flag}")
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{flag} {target}: {existing} is not a directory; choose another {flag}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".fada-write-check-", dir=existing)
    except OSError as err:
        what = "cannot write to the directory" if existing == folder else f"cannot create the directory {folder} in"
        raise ValueError(f"{flag} {target}: {what} {existing} ({err.strerror or err}); choose a writable "
                         f"place") from err
    os.close(fd)
    os.unlink(probe)


def partial_path(target: str | Path) -> Path:
    """Where ``target`` is written until it is finalised: ``.NAME.partial.SUFFIX`` in the same directory (the
    same file system, so the final rename is atomic; the suffix keeps ffmpeg's container choice)."""
    target = Path(target)
    return target.with_name(f".{target.stem}.partial{target.suffix}")


def finish_output(partial: Path, target: Path, *, keep: bool) -> bool:
    """Rename the finalised ``partial`` onto ``target`` (``keep``), or remove it; True when the target was written."""
    if keep:
        os.replace(partial, target)
        return True
    partial.unlink(missing_ok=True)
    return False


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


class StopSignals:
    """While active, SIGINT, SIGTERM and SIGHUP set :attr:`event` (and :attr:`signum`) instead of stopping the
    process; the previous handlers come back on exit. Signal handlers can only be installed from the main
    thread: elsewhere it installs nothing and only ``event`` stops the run.

    The frame loops read the flag between frames, so a signal never lands inside a frame write.
    """

    def __init__(self, event: threading.Event | None = None) -> None:
        self.event = event if event is not None else threading.Event()
        self.signum: int | None = None
        self._previous: dict[signal.Signals, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
        self.event.set()

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for s in STOP_SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    @property
    def name(self) -> str | None:
        return None if self.signum is None else signal_name(self.signum)

    @property
    def exit_code(self) -> int | None:
        """``128 + signum`` (130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP); None when no signal came."""
        return None if self.signum is None else 128 + self.signum
