"""Folders below a store's folder, opened without following symbolic links (the local store's
parts and item records)."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Sequence
from pathlib import Path

NO_LINK_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_below(
    root: Path,
    folders: Sequence[str],
    create: bool,
    mode: int,
    refused: Callable[[int, int], OSError],
) -> int:
    """A descriptor of ``root/folders...``, each folder opened without following a symbolic
    link (made with ``mode`` if missing and ``create``). A folder that is a symbolic link or
    not a folder raises ``refused(errno, its index in folders)``; any other error, OSError."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for index, folder in enumerate(folders):
            try:
                inner = open_folder_at(fd, folder, create, mode)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise refused(exc.errno, index) from None
                raise
            os.close(fd)
            fd = inner
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_folder_at(parent: int, folder: str, create: bool, mode: int) -> int:
    """``folder`` of the open ``parent``, not followed if a symbolic link; made first if
    missing and ``create`` (it usually exists: opened first, one system call)."""
    try:
        return os.open(folder, NO_LINK_FOLDER, dir_fd=parent)
    except FileNotFoundError:
        if not create:
            raise
    with contextlib.suppress(FileExistsError):  # made meanwhile by another thread or process
        os.mkdir(folder, mode, dir_fd=parent)
    return os.open(folder, NO_LINK_FOLDER, dir_fd=parent)
