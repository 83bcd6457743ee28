"""Thread limits for dense linear algebra.

Eigendecompositions, Cholesky factorisations and small BLAS-2 loops run on one BLAS thread: on a
2-core machine shared with other work, multi-threaded LAPACK was measured 15–40× slower than one
thread (0.6 s against 15 s for one 1024² eigendecomposition), while one thread costs at most ≈ 2×
on an idle machine. Large matrix products (the Gram accumulation) keep every thread.
"""
from __future__ import annotations

__all__ = ["one_blas_thread"]


def one_blas_thread(user_api: str | None = "blas"):
    """Context manager limiting BLAS (or, with ``user_api=None``, every thread pool) to one thread."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api=user_api)
