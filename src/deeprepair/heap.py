"""glibc heap settings that make big-tensor loops on CPU up to ~1.8x faster."""

from __future__ import annotations

import ctypes
import os


def keep_heap() -> bool:
    """Ask glibc to keep freed memory instead of returning big buffers to the OS each step.

    glibc serves every buffer over 32 MB with mmap and unmaps it on free, so each training step
    pays the page faults again; turning mmap off and raising the trim threshold removes that.
    A no-op (returns False) where the C library is not glibc.
    """
    if os.environ.get("DEEPREPAIR_KEEP_HEAP", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4
        ok = libc.mallopt(m_mmap_max, 0) and libc.mallopt(m_trim_threshold, 2**30)
        return bool(ok)
    except (OSError, AttributeError):
        return False
