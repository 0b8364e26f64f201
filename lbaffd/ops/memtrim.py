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

``limit_arenas`` goes further: one arena for the whole process (what
``MALLOC_ARENA_MAX=1`` does), so no thread keeps free memory of its own.
With the GIL held around nearly every allocation the threads hardly ever
contend for it.  Measured with ``bench.memprobe`` at N=1000 (realistic SB,
``recompute`` and SB restarts in turn): the peak of a full pass 158-160 ->
144-146 MB, RSS between passes 133.7 -> 131.6 MB, a pass's CPU unchanged
(1.5-1.7 s).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

M_ARENA_MAX = -8  # glibc malloc.h


@dataclass(frozen=True)
class _Glibc:
    """glibc's allocator controls, where this C library has them."""

    trim: Callable[[int], int] | None
    mallopt: Callable[[int, int], int] | None


@functools.cache
def _glibc() -> _Glibc:
    """Looked up once: the C library does not change under a process."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        fn = getattr(libc, "malloc_trim", None)
        opt = getattr(libc, "mallopt", None)
    except OSError:
        fn = opt = None
    if fn is not None:  # glibc (musl has none)
        fn.argtypes = [ctypes.c_size_t]
        fn.restype = ctypes.c_int
    if opt is not None:
        opt.argtypes = [ctypes.c_int, ctypes.c_int]
        opt.restype = ctypes.c_int
    return _Glibc(fn, opt)


def available() -> bool:
    """This C library has ``malloc_trim`` (glibc; musl has none)."""
    return _glibc().trim is not None


def trim() -> bool:
    """Release the free memory of every malloc arena; True when any was."""
    fn = _glibc().trim
    return bool(fn(0)) if fn is not None else False


def limit_arenas(arenas: int = 1, environ: Mapping[str, str] | None = None) -> bool:
    """At most ``arenas`` malloc arenas from now on, unless the operator set
    ``MALLOC_ARENA_MAX`` (then glibc already follows it).  glibc fixes the
    limit the first time a thread needs an arena beyond its eighth
    (``arena_get2``, malloc/arena.c), so this runs at start, before the
    daemon's threads.  True when the limit was set here."""
    env = os.environ if environ is None else environ
    if "MALLOC_ARENA_MAX" in env:
        return False
    opt = _glibc().mallopt
    return opt is not None and opt(M_ARENA_MAX, arenas) == 1
