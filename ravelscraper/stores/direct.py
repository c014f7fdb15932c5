"""Writing a new part file with ``O_DIRECT``: from one aligned buffer straight to the disk.

A buffered write copies every byte into a fresh page of the page cache, which cost about
40 % of a multi-GB crawl's CPU; a mirror never reads those pages back. With ``O_DIRECT``
the bytes are copied once into a reused, page-aligned buffer and written from there in
whole :data:`ALIGN`-byte blocks; :meth:`DirectWriter.finish` writes the last partial block
the ordinary way (``O_DIRECT`` off again), so the file ends up exactly as written.

Where the file system refuses ``O_DIRECT`` (tmpfs on older kernels, some network file
systems) or a direct write (an alignment it wants larger), the file is written the
ordinary way from there on: the same bytes, in the same order.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os

from ravelscraper.stores.local import write_all

ALIGN = 4096  # the block size of a direct write: its offset and length are multiples of it
BUFFER = 1024 * 1024  # the aligned buffer (an anonymous mapping: page-aligned)
O_DIRECT: int = getattr(os, "O_DIRECT", 0)


class DirectWriter:
    """Appends to a file opened at byte 0, with ``O_DIRECT`` while the file system takes it.

    One thread at a time: :meth:`write` for each piece, in order, then :meth:`finish`
    before the file is read, linked or continued.
    """

    def __init__(self, fd: int):
        self.fd = fd
        self.direct = False  # O_DIRECT is on: writes go through the aligned buffer
        self.buffer: mmap.mmap | None = None
        self.fill = 0  # bytes in the buffer, not yet written
        if not O_DIRECT:
            return
        try:
            flags = fcntl.fcntl(fd, fcntl.F_GETFL)
            fcntl.fcntl(fd, fcntl.F_SETFL, flags | O_DIRECT)
        except OSError:
            return  # the file system refuses it: ordinary writes
        self.direct = True
        self.buffer = mmap.mmap(-1, BUFFER)

    def write(self, data: bytes) -> None:
        if not self.direct or self.buffer is None:
            write_all(self.fd, data)
            return
        view = memoryview(data)
        while view:
            take = min(len(view), BUFFER - self.fill)
            self.buffer[self.fill : self.fill + take] = view[:take]
            view = view[take:]
            self.fill += take
            self.write_blocks()

    def write_blocks(self) -> None:
        """Write the buffer's whole blocks (all of it once O_DIRECT is off); keep the rest."""
        assert self.buffer is not None
        end = self.fill - self.fill % ALIGN if self.direct else self.fill
        done = 0
        with memoryview(self.buffer) as buffer:
            while done < end:
                try:
                    done += os.write(self.fd, buffer[done:end])
                except OSError as exc:
                    if exc.errno != errno.EINVAL or not self.direct:
                        raise
                    self.stop_direct()  # refused: the rest the ordinary way
                    end = self.fill
            rest = self.fill - done
            buffer[:rest] = buffer[done : self.fill]
        self.fill = rest

    def stop_direct(self) -> None:
        if self.direct:
            self.direct = False
            flags = fcntl.fcntl(self.fd, fcntl.F_GETFL)
            fcntl.fcntl(self.fd, fcntl.F_SETFL, flags & ~O_DIRECT)

    def finish(self) -> None:
        """Write what is left (O_DIRECT off): the file holds every byte, readable as usual."""
        if self.buffer is None:
            return
        self.stop_direct()
        self.write_blocks()
        self.buffer.close()
        self.buffer = None
