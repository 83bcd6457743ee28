"""Write files atomically: datasets in the pfsspec layout, sharded folders, text and JSON.

Every writer here derives from :class:`AtomicWriter`: the content is built under a temporary name
in the same folder (same filesystem, so the final :func:`os.replace` is a rename) and moved into
place only when complete; on an error the temporary file or folder is removed. A crash therefore
never leaves a half-written dataset or results file under the real name.

Nothing is left behind either: every live temporary target is registered and removed when the
writer is aborted, when the process exits, and, once :func:`install_termination_handler` has run
(the ``snrmoe`` command does), when it is terminated by SIGTERM or SIGHUP. Dataset writers also
hold a lock file (``.<name>.lock``) while they write, so two processes generating one path do not
race past the no-overwrite check: the second waits for the first and then finds the file.

The pfsspec layout (the keys below) is defined here, by what writes it; :mod:`snrmoe_lib.data.io`
reads and checks the same keys::

    dataset/arrays/flux/value    (N, P)  noise-free flux
    dataset/arrays/error/value   (N, P)  expected 1-sigma error ("clean error")
    dataset/arrays/mask/value    (N, P)  pixel mask, optional (non-zero = bad pixel)
    spectrumdataset/wave         (P,)    wavelength in Angstrom
    dataset/params               pandas table (PyTables 'table' or 'fixed' format), N rows

A sharded dataset is a folder holding ``shard_index.txt`` (one shard folder per line, ``#``
comments allowed) and ``<shard>/dataset.h5`` in the layout above.
"""
from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import threading
import time
import uuid
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

__all__ = [
    "FLUX_KEY",
    "ERROR_KEY",
    "MASK_KEY",
    "WAVE_KEY",
    "PARAMS_KEY",
    "SHARD_INDEX",
    "SHARD_FILE",
    "DatasetError",
    "AtomicWriter",
    "DatasetWriter",
    "ShardedWriter",
    "atomic_write_text",
    "Terminated",
    "install_termination_handler",
    "FileLock",
]

FLUX_KEY = "dataset/arrays/flux/value"
ERROR_KEY = "dataset/arrays/error/value"
MASK_KEY = "dataset/arrays/mask/value"
WAVE_KEY = "spectrumdataset/wave"
PARAMS_KEY = "dataset/params"
SHARD_INDEX = "shard_index.txt"
SHARD_FILE = "dataset.h5"


class DatasetError(ValueError):
    """A dataset is missing a key, has inconsistent shapes, or cannot be read or written."""


def temp_name(path: Path) -> Path:
    """A hidden, unique name beside ``path`` (same folder, so a rename moves it into place)."""
    return path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


# ---------------------------------------------------------------- nothing left behind on any exit

_LIVE: dict[Path, int] = {}     # temporary targets and lock files of this process → the pid that made them
_LIVE_LOCK = threading.Lock()


def _register(path: Path) -> None:
    with _LIVE_LOCK:
        _LIVE[path] = os.getpid()


def _unregister(path: Path) -> None:
    with _LIVE_LOCK:
        _LIVE.pop(path, None)


@atexit.register
def _remove_live() -> None:
    """Remove what this process still holds (an exit through an uncaught exception or ``sys.exit``)."""
    with _LIVE_LOCK:
        mine = [p for p, pid in _LIVE.items() if pid == os.getpid()]  # not a forked parent's files
        _LIVE.clear()
    for p in mine:
        _remove(p)


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM or SIGHUP (raised by :func:`install_termination_handler`'s handler)."""

    def __init__(self, signum: int):
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum


def _on_signal(signum, frame) -> None:
    raise Terminated(signum)


def install_termination_handler() -> bool:
    """Turn SIGTERM and SIGHUP into a :class:`Terminated` exception in the main thread.

    Context managers then unwind as on Ctrl-C: writers remove their temporary files and the runner
    marks the notebook it was running as interrupted. Only handlers still at their default are
    replaced (a host application's own handlers are kept). Returns whether SIGTERM is now handled.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is not None and signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, _on_signal)
    return signal.getsignal(signal.SIGTERM) is _on_signal


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class FileLock:
    """An exclusive lock on ``path`` held through a lock file ``.<name>.lock`` beside it.

    The lock file records the holder's host and pid; a lock left by a process that no longer runs
    on this host is taken over. Another live holder is waited for, up to ``timeout`` seconds.
    """

    def __init__(self, path: str | Path, timeout: float = 6 * 3600, poll: float = 0.2):
        self.path = Path(path)
        self.lock = self.path.with_name(f".{self.path.name}.lock")
        self.timeout, self.poll = timeout, poll
        self.held = False

    def _holder(self) -> tuple[str, int] | None:
        try:
            host, pid = self.lock.read_text().split()[:2]
            return host, int(pid)
        except (OSError, ValueError):
            return None

    def acquire(self) -> "FileLock":
        deadline = time.monotonic() + self.timeout
        me = f"{socket.gethostname()} {os.getpid()}\n"
        while True:
            try:
                fd = os.open(self.lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is not None and holder[0] == socket.gethostname() and not _pid_alive(holder[1]):
                    self.lock.unlink(missing_ok=True)  # left by a process that is gone
                    continue
                if time.monotonic() > deadline:
                    who = f"pid {holder[1]} on {holder[0]}" if holder else "another process"
                    raise FileExistsError(f"{self.path} is being written by {who} (lock file {self.lock}); wait "
                                          "for it, or remove the lock file if that process is gone") from None
                time.sleep(self.poll)
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(me)
            _register(self.lock)
            self.held = True
            return self

    def release(self) -> None:
        if self.held:
            self.lock.unlink(missing_ok=True)
            _unregister(self.lock)
            self.held = False

    def __enter__(self) -> "FileLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


class AtomicWriter:
    """Build ``path`` under a temporary name (:attr:`tmp`) and rename it into place on :meth:`close`.

    Subclasses write into :attr:`tmp` (a file or a folder), complete it in :meth:`_finish` and
    release open handles in :meth:`_release`. Used as a context manager, the target is committed
    when the block ends normally and discarded when it raises.

    Parameters
    ----------
    path
        The final file or folder. Its parent folders are created.
    overwrite
        Replace an existing ``path``; without it an existing ``path`` raises ``FileExistsError``.
    """

    def __init__(self, path: str | Path, overwrite: bool = False, lock: bool = False):
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"{self.path} exists; refusing to overwrite it (pass overwrite=True)")
        self.overwrite = overwrite
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(self.path).acquire() if lock else None
        if self._lock is not None and self.path.exists() and not overwrite:
            self._lock.release()  # another writer finished it while this one waited for the lock
            raise FileExistsError(f"{self.path} exists; refusing to overwrite it (pass overwrite=True)")
        self.tmp = temp_name(self.path)
        _register(self.tmp)
        self._closed = False

    def _finish(self) -> None:
        """Complete the temporary target (raise to discard it)."""

    def _release(self) -> None:
        """Close what the writer holds open before the temporary target is removed."""

    def close(self) -> Path:
        """Complete the target and move it into place; on an error nothing is kept."""
        if self._closed:
            return self.path
        try:
            self._finish()
            self._move_into_place()
        except BaseException:
            self.abort()
            raise
        _unregister(self.tmp)
        self._closed = True
        if self._lock is not None:
            self._lock.release()
        return self.path

    def _move_into_place(self) -> None:
        old = None
        if self.path.exists() and (self.tmp.is_dir() or (self.path.is_dir() and not self.path.is_symlink())):
            # a folder cannot be renamed over a non-empty one, nor a file over a folder (or the
            # reverse, when --overwrite switches between one file and shards): move the old one aside
            old = temp_name(self.path)
            _register(old)
            os.replace(self.path, old)
        try:
            os.replace(self.tmp, self.path)
        except BaseException:
            if old is not None:
                os.replace(old, self.path)  # put the old one back: a failed write changes nothing
                _unregister(old)
            raise
        if old is not None:
            _remove(old)
            _unregister(old)

    def abort(self) -> None:
        """Discard the temporary target (and release the lock)."""
        if self._closed:
            return
        try:
            self._release()
        except Exception:  # noqa: BLE001 - closing a broken handle must not mask the real error
            pass
        _remove(self.tmp)
        _unregister(self.tmp)
        self._closed = True
        if self._lock is not None:
            self._lock.release()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (replacing any file there) and return the path."""
    with AtomicWriter(path, overwrite=True) as writer:
        writer.tmp.write_text(text)
    return writer.path


class DatasetWriter(AtomicWriter):
    """Write one pfsspec HDF5 file row block by row block; atomic on :meth:`close`.

    An existing file is never replaced unless ``overwrite=True``.

    Examples
    --------
    >>> with DatasetWriter("x.h5", n=10, wave=wave) as w:        # doctest: +SKIP
    ...     w.write(flux, error, params_df, mask=mask)
    """

    def __init__(self, path: str | Path, n: int, wave: np.ndarray, with_mask: bool = True,
                 overwrite: bool = False, dtype=np.float32, attrs: dict | None = None, lock: bool = True):
        super().__init__(path, overwrite, lock=lock)
        self._h5 = None
        try:
            self._open(n, wave, with_mask, dtype, attrs)
        except BaseException:
            self.abort()  # nothing half-made left behind, the lock released
            raise

    def _open(self, n, wave, with_mask, dtype, attrs) -> None:
        self.n = int(n)
        self.wave = np.asarray(wave, dtype=np.float64)
        self.with_mask = with_mask
        self._h5 = h5py.File(self.tmp, "w")
        p = len(self.wave)
        chunks = (max(1, min(self.n, 64)), p)
        self._flux = self._h5.create_dataset(FLUX_KEY, (self.n, p), dtype=dtype, chunks=chunks)
        self._error = self._h5.create_dataset(ERROR_KEY, (self.n, p), dtype=dtype, chunks=chunks)
        self._mask = (self._h5.create_dataset(MASK_KEY, (self.n, p), dtype=np.int32, chunks=chunks)
                      if with_mask else None)
        self._h5.create_dataset(WAVE_KEY, data=self.wave)
        for k, v in (attrs or {}).items():  # provenance, e.g. the mock spec that made the file
            self._h5.attrs[k] = v
        self._params: list[pd.DataFrame] = []
        self._pos = 0

    def write(self, flux: np.ndarray, error: np.ndarray, params: pd.DataFrame, mask: np.ndarray | None = None) -> None:
        """Append a block of rows."""
        k = len(flux)
        if flux.shape != error.shape or flux.shape[1:] != self.wave.shape:
            raise DatasetError(f"block shapes flux {flux.shape}, error {error.shape}, wave {self.wave.shape} disagree")
        if len(params) != k:
            raise DatasetError(f"params block has {len(params)} rows, flux block {k}")
        if self._pos + k > self.n:
            raise DatasetError(f"writing {k} rows at {self._pos} overflows the declared {self.n}")
        if self.with_mask:
            if mask is None or mask.shape != flux.shape:
                raise DatasetError("this writer holds a mask: give one block of the flux's shape")
            self._mask[self._pos:self._pos + k] = mask
        self._flux[self._pos:self._pos + k] = flux
        self._error[self._pos:self._pos + k] = error
        self._params.append(params.reset_index(drop=True))
        self._pos += k

    def _finish(self) -> None:
        if self._pos != self.n:
            raise DatasetError(f"{self.path}: {self._pos} rows written of the {self.n} declared; nothing kept")
        self._h5.close()
        params = pd.concat(self._params, ignore_index=True) if self._params else pd.DataFrame()
        params.to_hdf(self.tmp, key=PARAMS_KEY, mode="a", format="table")

    def _release(self) -> None:
        if self._h5 is not None:
            self._h5.close()


class ShardedWriter(AtomicWriter):
    """Write a sharded pfsspec folder (``shard_index.txt`` + ``<shard>/dataset.h5``) atomically.

    Rows are appended in blocks and split into shards of ``shard_size`` rows; the folder is built
    under a temporary name and renamed into place when complete.
    """

    def __init__(self, path: str | Path, n: int, wave: np.ndarray, shard_size: int,
                 with_mask: bool = True, overwrite: bool = False, dtype=np.float32, attrs: dict | None = None):
        if shard_size <= 0:
            raise ValueError("shard_size must be positive")
        super().__init__(path, overwrite, lock=True)
        self.tmp.mkdir()
        self.n, self.shard_size = int(n), int(shard_size)
        self.sizes = [min(shard_size, n - s) for s in range(0, n, shard_size)]
        self.names = [f"shard{i:04d}" for i in range(len(self.sizes))]
        self.wave, self.with_mask, self.dtype, self.attrs = wave, with_mask, dtype, attrs
        self._i = -1
        self._left = 0
        self._writer: DatasetWriter | None = None

    def _next(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._i += 1
        self._left = self.sizes[self._i]
        self._writer = DatasetWriter(self.tmp / self.names[self._i] / SHARD_FILE, self._left, self.wave,
                                     self.with_mask, dtype=self.dtype, attrs=self.attrs, lock=False)

    def write(self, flux, error, params: pd.DataFrame, mask=None) -> None:
        """Append a block of rows (split across shards as needed)."""
        s = 0
        while s < len(flux):
            if self._left == 0:
                self._next()
            k = min(self._left, len(flux) - s)
            self._writer.write(flux[s:s + k], error[s:s + k], params.iloc[s:s + k],
                               None if mask is None else mask[s:s + k])
            self._left -= k
            s += k

    def _finish(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._i != len(self.sizes) - 1 or self._left != 0:
            raise DatasetError(f"{self.path}: fewer rows written than the {self.n} declared; nothing kept")
        (self.tmp / SHARD_INDEX).write_text("# shards of this dataset, one folder per line\n" + "\n".join(self.names) + "\n")

    def _release(self) -> None:
        if self._writer is not None:
            self._writer.abort()
