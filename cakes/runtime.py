"""Process settings that make CPU training faster; main.py and the benchmarks apply them before torch loads.

Each one is skipped when you set its environment variable yourself.
"""
import ctypes
import ctypes.util
import os

# mallopt(3) parameters of glibc.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


def tune_process():
    """OpenMP threads that spin only briefly, and a heap that keeps large tensors' memory (True when kept)."""
    short_spin()
    return keep_heap()


def short_spin():
    """Idle OpenMP threads spin for 10,000 rounds (glibc's libgomp: 300,000 by default) before they sleep.

    Between the operators of a step, threads wake within the short spin, as fast as with the default (sleeping
    at once, OMP_WAIT_POLICY=PASSIVE, made a CPU training step 10% slower here); while the step waits for
    data, they stop taking the cores that the loader workers need.
    """
    if 'OMP_WAIT_POLICY' not in os.environ:
        os.environ.setdefault('GOMP_SPINCOUNT', '10000')


def keep_heap():
    """Serve large allocations from the heap and never give it back (glibc only; True when applied).

    glibc maps every large block (most activations and gradients) fresh from the kernel and unmaps it when
    freed, so each training step page-faults and zeroes much of its working set again: here 17,000-33,000
    faults a step for one 8x224x224 clip. Kept, the memory is reused from step to step; the process holds
    its peak instead (about 20% more resident memory here).
    """
    if ('MALLOC_MMAP_MAX_' in os.environ or 'MALLOC_TRIM_THRESHOLD_' in os.environ
            or 'glibc.malloc' in os.environ.get('GLIBC_TUNABLES', '')):
        return False
    mallopt = glibc_function('mallopt', ctypes.c_int, ctypes.c_int)
    return mallopt is not None and bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, -1))


def release_heap():
    """Give the freed memory of a kept heap back to the system (glibc's malloc_trim; True when some was), as
    before starting another process that needs as much again."""
    trim = glibc_function('malloc_trim', ctypes.c_size_t)
    return trim is not None and bool(trim(0))


def glibc_function(name, *argtypes):
    """The C library's function `name`, or None where there is none (not glibc: macOS, musl)."""
    try:
        function = getattr(ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6'), name)
    except (OSError, AttributeError):
        return None
    function.argtypes = list(argtypes)
    return function
