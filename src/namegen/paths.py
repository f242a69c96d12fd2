"""Paths a user gives: each is checked for what it must be before anything is opened, read or written.

No torch here: `namegen` and `train.py` check paths before the heavy imports.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from namegen.errors import UserError, shown


def regular_file(path: str | Path, key: str | None, want: str) -> Path:
    """`path` as a readable regular file, or a UserError naming what it is instead (opening a FIFO would hang,
    a device never ends). `key` names the setting the path was given as (None: a command's argument), `want`
    what to give instead."""
    p = Path(path).expanduser()
    if str(path) == "":
        raise UserError(f"{key or 'the path'} is empty; give {want}")
    named = f"{key}={shown(str(p))}" if key else shown(str(p))
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        raise UserError(f"{named}: no such file or folder; give {want}") from None
    except OSError as e:
        raise UserError(f"{named}: {e.strerror}; give {want}") from None
    if stat.S_ISDIR(mode):
        raise UserError(f"{named} is a folder; give {want}")
    if not stat.S_ISREG(mode):
        raise UserError(f"{named} is not a regular file (a device, FIFO or socket); give {want}")
    if not os.access(p, os.R_OK):
        raise UserError(f"{named} cannot be read (permission denied); give {want}")
    return p


def lexists(path: Path) -> bool:
    """Whether `path` exists (as a link, too); a name too long for the file system does not."""
    try:
        os.lstat(path)
    except OSError:  # FileNotFoundError, or ENAMETOOLONG for a name the file system cannot hold
        return False
    return True


def writable_folder(path: str | Path, key: str) -> Path:
    """`path` as a folder that exists or can be made, and written into; else a UserError saying why not.

    Checked without making anything: every existing part must be a folder, the nearest existing one writable,
    and every name short enough for its file system (Hydra's mkdir would otherwise fail with a traceback).
    """
    p = Path(path).expanduser().absolute()
    existing = p
    while not lexists(existing):
        existing = existing.parent
    if existing.is_symlink() and not existing.exists():  # a dangling link: mkdir would fail on it
        raise UserError(f"{key}={shown(str(path))}: {existing} is a broken symbolic link; give another folder")
    if not existing.is_dir():
        raise UserError(f"{key}={shown(str(path))}: {existing} is a file, not a folder; give another folder")
    name_max = os.pathconf(existing, "PC_NAME_MAX")
    long = [part for part in p.relative_to(existing).parts if len(os.fsencode(part)) > name_max]
    if long:
        raise UserError(f"{key}={shown(str(path))}: the folder name {shown(long[0])} is {len(os.fsencode(long[0]))} "
                        f"bytes, more than the file system's {name_max}; give a shorter name")
    if len(os.fsencode(str(p))) >= os.pathconf(existing, "PC_PATH_MAX"):
        raise UserError(f"{key}={shown(str(path))} is longer than the file system allows; give a shorter path")
    if os.statvfs(existing).f_flag & os.ST_RDONLY:
        raise UserError(f"{key}={shown(str(path))}: {existing} is on a read-only file system; give a folder you can "
                        "write to")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{key}={shown(str(path))}: {existing} is not writable (permission denied); give a folder "
                        "you can write to")
    return p
