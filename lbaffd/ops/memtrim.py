"""Give the C heap's free memory back to the system after bulk work.

Python's own allocator returns its empty arenas, but everything larger than
512 bytes (the IDL's JSON, OpenFlow replies, bundle buffers, dicts of 100k
entries) comes from glibc's ``malloc``.  glibc gives a thread that
allocates while another holds the main arena an arena of its own (up to 8
per core), and returns memory to the system only from the top of the main
heap on ``free``; free chunks inside the others stay resident.  The SB IDL
thread, the OpenFlow reader and the worker all allocate in bulk, so every
full pass left a little more free-but-resident memory behind: the RSS crept
although the live heap did not.  ``malloc_trim(0)`` releases the free pages
of every arena (``MADV_DONTNEED`` on whole free pages since glibc 2.8).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

_trim: Callable[[int], int] | None = None
_loaded = False


def _load() -> Callable[[int], int] | None:
    global _trim, _loaded
    if not _loaded:
        _loaded = True
        name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(name) if name else None
            fn = getattr(libc, "malloc_trim", None)
        except OSError:
            fn = None
        if fn is not None:
            fn.argtypes = [ctypes.c_size_t]
            fn.restype = ctypes.c_int
            _trim = fn
    return _trim


def available() -> bool:
    """This C library has ``malloc_trim`` (glibc; musl has none)."""
    return _load() is not None


def trim() -> bool:
    """Release the free memory of every malloc arena; True when any was."""
    fn = _load()
    return bool(fn(0)) if fn is not None else False
