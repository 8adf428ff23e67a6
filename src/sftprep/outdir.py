"""Output directories that sftprep replaces as a whole: what may be replaced, one writer at a time, and the
replacement itself.

- `check_replaceable(path, markers)`: only a directory sftprep wrote (it holds one of `markers`, e.g.
  `manifest.json`) or an empty one may be replaced; anything else is refused naming what is in it.
- `out_dir_lock(path, command)`: an exclusive, non-blocking `flock` on `<parent>/.<name>.lock`, held from
  staging to the final rename; a second writer gets `OutDirBusy` naming the holder. The kernel releases the
  lock of a process that dies, so a stale lock file is simply taken over.
- `replace_dir(staging, final, markers)`: rename the old directory aside, the staging directory in, then
  delete the old one; a kill at any moment leaves no `final` or a complete one.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from sftprep.errors import ConfigError, SftprepError

STAGING_MARKER = ".sftprep-staging"  # in a staging directory until it is renamed into place
_SHOWN = 5  # entries listed when a directory is refused


class OutDirBusy(SftprepError):
    """Another sftprep process is writing the same output directory."""

    exit_code = 2


def normalized(path: Path | str) -> Path:
    """`path` absolute, `..` collapsed and the parent's symlinks resolved (the name itself kept), so that
    `out`, `./out` and `/abs/out` are one directory and share one lock. Refuses `/`, the current directory
    and its ancestors: sftprep renames and deletes OUT_DIR as a whole."""
    p = Path(os.path.abspath(path))
    if not p.name:
        raise ConfigError(f"output path {str(path)!r} is the filesystem root; give a new directory, e.g. -o out")
    p = p.parent.resolve() / p.name
    cwd = Path.cwd().resolve()
    if p == cwd or p in cwd.parents:
        raise ConfigError(
            f"output path {str(path)!r} is the current directory{'' if p == cwd else ' or one above it'}; "
            "sftprep replaces its output directory as a whole: give a new directory, e.g. -o out"
        )
    return p


def _entries(path: Path) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(path))
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}; check its permissions or choose another -o") from e


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f", ... ({len(names)} entries)" if len(names) > _SHOWN else "")


def check_replaceable(path: Path, markers: tuple[str, ...], expected: tuple[str, ...] | None = None) -> None:
    """Return when `path` may be replaced: it does not exist, is an empty directory, or is a directory holding
    one of `markers` (a file sftprep writes there). With `expected` (glob patterns of every name sftprep
    writes there), a marked directory holding anything else is refused too. Else ConfigError (exit 2)
    naming the path, what is in it and the fix."""
    path = Path(path)
    fix = "choose another -o, or move it away yourself"
    if path.is_symlink():
        raise ConfigError(
            f"{path} is a symbolic link (to {os.readlink(path)}); sftprep will not replace it: give the "
            f"target directory itself or {fix}"
        )
    if not path.exists():
        for parent in path.absolute().parents:  # the nearest existing ancestor must be a directory
            if parent.exists():
                if not parent.is_dir():
                    raise ConfigError(f"{path}: {parent} is a file, not a directory; {fix}")
                break
        return
    if not path.is_dir():
        raise ConfigError(f"{path} is a file that sftprep did not write ({path.stat().st_size} bytes); {fix}")
    names = _entries(path)
    if not names:
        return
    if not any((path / m).is_file() for m in markers):
        raise ConfigError(
            f"{path} was not written by sftprep (no {' or '.join(markers)} in it); it holds {_listing(names)}. "
            f"sftprep replaces only directories it wrote: {fix}"
        )
    if expected is not None:
        foreign = [n for n in names if not any(fnmatch.fnmatchcase(n, pat) for pat in expected)]
        if foreign:
            raise ConfigError(
                f"{path} holds files sftprep did not write: {_listing(foreign)}; replacing it would delete them: "
                f"move them out of {path} or {fix}"
            )


def staging_dir(final: Path) -> Path:
    """Where a run stages `final`: `.NAME.tmp` beside it."""
    return final.with_name(f".{final.name}.tmp")


def make_staging(final: Path, markers: tuple[str, ...], keep: bool = False) -> Path:
    """Create (or, with `keep`, reuse) the staging directory of `final`. An earlier one is deleted only when
    sftprep made it (it holds STAGING_MARKER or one of `markers`, or is empty); call under `out_dir_lock`."""
    staging = staging_dir(final)
    if staging.exists() or staging.is_symlink():
        check_replaceable(staging, (STAGING_MARKER, *markers))
        if not keep:
            shutil.rmtree(staging)
    staging.mkdir(parents=True, exist_ok=True)
    (staging / STAGING_MARKER).touch()
    return staging


def remove_staging(staging: Path) -> None:
    """Delete a staging directory after a failed run (only one that sftprep made)."""
    if (staging / STAGING_MARKER).is_file():
        shutil.rmtree(staging, ignore_errors=True)


def replace_dir(staging: Path, final: Path, markers: tuple[str, ...], expected: tuple[str, ...] | None = None) -> None:
    """Put `staging` at `final`: the old `final` (only one `check_replaceable` accepts) is renamed aside to
    `.NAME.old`, `staging` renamed in, then the old one deleted. A kill at any moment leaves no `final` or a
    complete one (and `.NAME.old`, which the next run deletes after the same check)."""
    check_replaceable(final, markers, expected)
    old = final.with_name(f".{final.name}.old")
    if old.exists() or old.is_symlink():
        check_replaceable(old, markers, expected)
        shutil.rmtree(old)
    (staging / STAGING_MARKER).unlink(missing_ok=True)
    if final.exists():
        final.rename(old)
    staging.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def lock_path(path: Path) -> Path:
    p = normalized(path)
    return p.with_name(f".{p.name}.lock")


def _holder(f: IO[str]) -> dict[str, Any]:
    for _ in range(20):  # the holder writes its record right after taking the lock
        f.seek(0)
        with contextlib.suppress(ValueError):
            info = json.loads(f.read())
            if isinstance(info, dict):
                return info
        time.sleep(0.05)
    return {}


def _busy(path: Path, info: dict[str, Any]) -> OutDirBusy:
    who = f"pid {info.get('pid', '?')}"
    if info.get("host") and info.get("host") != socket.gethostname():
        who += f" on {info['host']}"
    started = info.get("started")
    when = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(started)) if started else ""
    cmd = f" (`{info['command']}`)" if info.get("command") else ""
    return OutDirBusy(
        f"{path} is being written by another sftprep run: {who}{cmd}{when}. Wait for it to finish, or choose "
        f"another -o (lock file {lock_path(path)})"
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _try_flock(f: IO[str]) -> bool | None:
    """True: locked; False: held by another process; None: this filesystem has no flock."""
    try:
        import fcntl
    except ImportError:
        return None
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        return None
    return True


def _open_lock(lock: Path) -> IO[str]:
    try:
        return open(lock, "a+", encoding="utf-8")
    except OSError as e:
        raise ConfigError(
            f"cannot create the lock file {lock}: {e.strerror}; the directory {lock.parent} must exist and be "
            "writable: choose another -o"
        ) from e


_HELD: set[int] = set()  # descriptors of the locks this process holds


def forget_locks_in_child() -> None:
    """In a forked worker: point the inherited lock descriptors at /dev/null. flock belongs to the open file,
    which a fork shares: a worker outliving a killed parent would hold the parent's lock (a resume would find
    OUT_DIR busy). The numbers stay open (nothing closes a reused number later); no unlock is called (that
    would unlock the parent's too)."""
    for fd in list(_HELD):
        null = os.open(os.devnull, os.O_RDWR)
        try:
            os.dup2(null, fd)
        finally:
            os.close(null)
    _HELD.clear()


@contextlib.contextmanager
def out_dir_lock(path: Path, command: str) -> Iterator[None]:
    """Hold the only right to write `path` (from staging to the final rename). Raises OutDirBusy at once when
    another live process holds it. `command` (e.g. "prepare") and sys.argv are recorded for that message."""
    lock = lock_path(path)
    with contextlib.suppress(OSError):
        lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        f = _open_lock(lock)
        got = _try_flock(f)
        if got is False:
            info = _holder(f)
            f.close()
            raise _busy(Path(path), info)
        if got is None:  # no flock here: a record of a live process is the lock
            info = _holder_quick(f)
            alive = info.get("pid") not in (None, os.getpid()) and _pid_alive(int(info["pid"]))
            if alive and info.get("host") in (None, socket.gethostname()):
                f.close()
                raise _busy(Path(path), info)
        try:  # the file we locked may have been unlinked by a holder that just finished: then lock the new one
            same = os.fstat(f.fileno()).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        f.close()
    try:
        name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
        argv = " ".join(["sftprep" if name in ("", "__main__.py", "-c") else name, *sys.argv[1:]])
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": argv, "sftprep": command}
        f.seek(0)
        f.truncate()
        f.write(json.dumps({**info, "started": time.time()}))
        f.flush()
        _HELD.add(f.fileno())
        yield
    finally:
        _HELD.discard(f.fileno())
        with contextlib.suppress(OSError):
            lock.unlink()  # while still holding it: a waiter that opened the old file re-checks the inode
        f.close()


def _holder_quick(f: IO[str]) -> dict[str, Any]:
    f.seek(0)
    try:
        info = json.loads(f.read() or "{}")
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}
