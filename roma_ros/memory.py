"""glibc heap settings for long-running nodes (no-ops elsewhere)."""
from __future__ import annotations

import ctypes

_M_MMAP_THRESHOLD = -3
LARGE_BUFFER_BYTES = 1 << 20


def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return None


def map_large_buffers(threshold: int = LARGE_BUFFER_BYTES) -> None:
    """Serve allocations of `threshold` bytes and more (camera frames: a 1080p frame is 6 MB)
    from their own mappings, returned to the OS when freed. glibc otherwise raises its mmap
    threshold after the first large free and serves later frames from the heap, where they
    fragment it and the process's memory creeps up for hours."""
    libc = _libc()
    if libc is not None and hasattr(libc, "mallopt"):
        libc.mallopt(_M_MMAP_THRESHOLD, int(threshold))


def return_freed_heap() -> None:
    """Give freed heap back to the OS (after releasing a model: glibc keeps it otherwise, and
    repeated configure/cleanup cycles would look like a leak)."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
