"""Atomic writes: a temporary file (or folder) beside the target, then ``os.replace``.

A killed process therefore leaves either the old file or the new one, never a half-written one. Every module that
writes a file goes through these helpers.

This module imports only the standard library, so it can be copied next to a checkpoint's remote code.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0o022)  # the only portable way to read it is to set it; put it straight back
    os.umask(mask)
    return mask


def _give_default_mode(path: str, is_dir: bool = False) -> None:
    """The mode a plain ``open``/``mkdir`` would give (``0o666``/``0o777`` less the umask): ``mkstemp`` and
    ``mkdtemp`` create owner-only files and folders, which would make saved models unreadable to other users."""
    os.chmod(path, (0o777 if is_dir else 0o666) & ~_umask())


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(temp_path)`` to produce the file, then move it over ``path`` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(temp_name)
        _give_default_mode(temp_name)
        os.replace(temp_name, path)
    except BaseException:
        if os.path.exists(temp_name):
            os.unlink(temp_name)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 text atomically."""
    return atomic_write(path, lambda temp: Path(temp).write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write indented JSON atomically."""
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


@contextlib.contextmanager
def staged_directory(target: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary folder beside ``target``; when the block ends without an error, move each entry into
    ``target`` with ``os.replace`` (files already in ``target`` under other names stay).

    An interrupted save leaves every file of ``target`` either old or new, never half written.
    """
    target = os.path.abspath(os.fspath(target))
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=parent, prefix=".saving-") as staging:
        yield staging
        os.makedirs(target, exist_ok=True)
        for name in sorted(os.listdir(staging)):
            destination = os.path.join(target, name)
            # files some writers create owner-only (safetensors' save_file gives 0o600) get a plain file's mode too
            _give_default_mode(os.path.join(staging, name), is_dir=os.path.isdir(os.path.join(staging, name)))
            if os.path.isdir(destination) and os.path.isdir(os.path.join(staging, name)):
                # os.replace cannot move a folder over a non-empty one: swap it out first.
                with tempfile.TemporaryDirectory(dir=parent, prefix=".replaced-") as old:
                    os.replace(destination, os.path.join(old, name))
                    os.replace(os.path.join(staging, name), destination)
            else:
                os.replace(os.path.join(staging, name), destination)
