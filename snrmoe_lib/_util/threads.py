"""Thread limits for dense linear algebra.

Eigendecompositions, Cholesky factorisations and small BLAS-2 loops run on one BLAS thread: on a
2-core machine shared with other work, multi-threaded LAPACK was measured 15–40× slower than one
thread (0.6 s against 15 s for one 1024² eigendecomposition), while one thread costs at most ≈ 2×
on an idle machine. Large matrix products (the Gram accumulation) keep every thread.
"""
from __future__ import annotations

__all__ = ["one_blas_thread", "ordered_map"]


def one_blas_thread(user_api: str | None = "blas"):
    """Context manager limiting BLAS (or, with ``user_api=None``, every thread pool) to one thread."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api=user_api)


def ordered_map(fn, items, workers: int = 2, ahead: int = 2):
    """``fn(item)`` for every item on ``workers`` background threads, yielded in the items' order.

    At most ``workers + ahead + 1`` items are in hand or waiting at once, so memory stays bounded. The streamed
    passes use it to read, add noise to and featurise the next chunks while the caller accumulates
    this one: numpy, BLAS and HDF5 reads spend most of their time outside the GIL, so the threads
    share the cores. An exception in ``fn`` is raised in the consumer at that item; leaving the loop
    early cancels the work not yet started.
    """
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    if workers < 1 or ahead < 0:
        raise ValueError(f"need workers >= 1 and ahead >= 0, got workers={workers}, ahead={ahead}")
    it = iter(items)
    pending: deque = deque()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="snrmoe-pass")
    try:
        for item in it:
            pending.append(pool.submit(fn, item))
            if len(pending) > workers + ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for f in pending:
            f.cancel()
        pool.shutdown(wait=True)
