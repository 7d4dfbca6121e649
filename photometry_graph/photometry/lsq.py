"""Sparse weighted least squares of the global solve, robustly reweighted.

Linear algebra: normal equations of the weighted sparse design, factorised
with SuperLU (``MMD_ATA`` ordering, the least fill on grid graphs); later
reweighting iterations run conjugate gradients preconditioned by that first
factorisation (a new factorisation only when CG does not converge).
``solver="lsqr"`` uses :func:`scipy.sparse.linalg.lsqr` started from a given
point instead.

:func:`irls` iterates: a plain weighted solve, then Huber weights (twice),
then Tukey's biweight on residuals normalised by their sigma and a robust
scale per group of rows, until the unknowns or the weights settle.
:func:`diag_inverse` gives the variance of each unknown.
"""

import numpy as np
import scipy.sparse as sp
from scipy.sparse import linalg as spla

from .._stats import MAD_TO_SIGMA, robust_weights

__all__ = ["normal_matrix", "solve_reweighted", "irls", "diag_inverse"]

_WEIGHT_TOL = 1e-2
_X_TOL = 0.05
_EXACT_UNCERTAINTY_MAX_UNKNOWNS = 1000


def normal_matrix(design, weights, ridge=None):
    """Normal matrix ``design^T W design (+ diag(ridge))`` in CSC format.

    Parameters
    ----------
    design : scipy.sparse matrix (m, n)
    weights : numpy.ndarray (m,)
    ridge : numpy.ndarray (n,), optional

    Returns
    -------
    scipy.sparse.csc_matrix or scipy.sparse matrix
    """
    normal = (design.T @ sp.diags(weights) @ design).tocsc()
    if ridge is not None:
        normal = normal + sp.diags(ridge)
    return normal


def _solve_normal(normal, rhs):
    """Solve the sparse symmetric positive definite system ``normal @ x = rhs``.

    Module-level so that the failure path can be exercised in tests.  Raises
    ``RuntimeError`` when the matrix is singular or the result is not finite.
    """
    # MMD on A^T A gives the least fill on the block-sparse normal matrices of grid graphs
    lu = spla.splu(sp.csc_matrix(normal), permc_spec="MMD_ATA")
    x = lu.solve(np.asarray(rhs, dtype=float))
    if not np.all(np.isfinite(x)):
        raise RuntimeError("sparse solve returned non-finite values")
    return x, lu


def solve_reweighted(normal, rhs, x0, lu):
    """Solve a reweighted system with CG preconditioned by an earlier factorisation.

    IRLS changes the weights a little from one iteration to the next, so the
    factorisation of the first normal matrix is an excellent preconditioner:
    a few CG iterations replace a new factorisation (the expensive part for
    large graphs).  Falls back to a fresh factorisation when CG does not
    converge.

    Parameters
    ----------
    normal : scipy.sparse matrix (n, n)
    rhs : numpy.ndarray (n,)
    x0 : numpy.ndarray (n,) or None
        Starting point of CG.
    lu : scipy.sparse.linalg.SuperLU or None
        Earlier factorisation; None factorises ``normal``.

    Returns
    -------
    x : numpy.ndarray
    lu : scipy.sparse.linalg.SuperLU
        The factorisation to reuse.

    Raises
    ------
    RuntimeError
        Singular matrix or non-finite result.
    """
    if lu is None:
        return _solve_normal(normal, rhs)
    op = spla.LinearOperator(normal.shape, matvec=lu.solve, dtype=float)
    x, status = spla.cg(normal, rhs, x0=x0, rtol=1e-9, atol=0.0, maxiter=40, M=op)
    if status != 0 or not np.all(np.isfinite(x)):
        return _solve_normal(normal, rhs)
    return x, lu


def _scaled_robust_weights(resid, kind):
    """Huber or Tukey weights of normalised residuals (robust scale from the MAD)."""
    r = np.abs(resid)
    finite = np.isfinite(r)
    if not finite.any():
        return np.ones_like(r), 1.0
    # residuals are normalised by their sigma: a scale below 1 means the edges agree
    # better than their uncertainties say, and nothing within ~4.7 sigma is down-weighted
    scale = max(MAD_TO_SIGMA * float(np.median(r[finite])), 1.0)
    u = np.where(finite, r / scale, 0.0)
    return robust_weights(u, kind), scale


def irls(design, rhs, sigma, *, iterations, groups=None, ridge=None, x0=None,
         solver="direct"):
    """Iteratively reweighted sparse least squares.

    Parameters
    ----------
    design : scipy.sparse matrix (m, n)
    rhs, sigma : numpy.ndarray (m,)
    iterations : int
        Robust reweighting iterations after the first (plain weighted) solve:
        two Huber steps, then Tukey's biweight.
    groups : numpy.ndarray of int (m,), optional
        Rows of different kinds (offset rows, slope rows) get their own
        robust scale.
    ridge : numpy.ndarray (n,), optional
        Tiny diagonal regularisation added to the normal matrix.
    x0 : numpy.ndarray, optional
        Starting point for ``solver="lsqr"``.
    solver : {"direct", "lsqr"}

    Returns
    -------
    x : numpy.ndarray (n,)
    weights : numpy.ndarray (m,)
        Final robust weights in [0, 1].
    info : dict
        ``iterations``, ``scale`` (robust residual scale per group) and
        ``weights`` (final weights of the rows, ``robust / sigma^2``).
    """
    design = sp.csr_matrix(design)
    m, n = design.shape
    groups = np.zeros(m, dtype=np.int64) if groups is None else groups
    inv_sig = 1.0 / sigma
    robust = np.ones(m)
    x = None
    scales = {}
    lu = None
    it_done = 0
    for it in range(iterations + 1):
        w = robust * inv_sig ** 2
        if solver == "lsqr":
            sw = np.sqrt(w)
            A = sp.diags(sw) @ design
            b = sw * rhs
            if ridge is not None:
                A = sp.vstack([A, sp.diags(np.sqrt(ridge))]).tocsr()
                b = np.concatenate([b, np.zeros(n)])
            res = spla.lsqr(A, b, atol=1e-12, btol=1e-12, iter_lim=20 * n + 100,
                            x0=x if x is not None else x0)
            x_new = res[0]
            if not np.all(np.isfinite(x_new)):
                raise RuntimeError("lsqr returned non-finite values")
        else:
            normal = normal_matrix(design, w, ridge)
            x_new, lu = solve_reweighted(normal, design.T @ (w * rhs), x, lu)
            if it == 0:
                d = normal.diagonal()
                x_scale = float(np.median(1.0 / np.sqrt(d[d > 0]))) if np.any(d > 0) else 0.0
        # converged when no unknown moves by more than a small fraction of its
        # (approximate, 1/sqrt(diag N)) uncertainty
        converged = (it >= 3 and x is not None and solver == "direct"
                     and np.max(np.abs(x_new - x)) <= _X_TOL * x_scale)
        x = x_new
        it_done = it
        if it == iterations or converged:
            break
        resid = (design @ x - rhs) * inv_sig
        kind = "huber" if it < 2 else "tukey"
        new = robust.copy()
        for g in np.unique(groups):
            sel = groups == g
            new[sel], scales[int(g)] = _scaled_robust_weights(resid[sel], kind)
        settled = it >= 2 and np.max(np.abs(new - robust)) < _WEIGHT_TOL
        robust = new
        if settled:  # the weights no longer move: the next solve would repeat this one
            break
    resid = (design @ x - rhs) * inv_sig
    final_scale = {}
    for g in np.unique(groups):
        sel = groups == g
        r = np.abs(resid[sel])
        final_scale[int(g)] = float(MAD_TO_SIGMA * np.median(r)) if r.size else 1.0
    return x, robust, {"iterations": it_done + 1, "scale": final_scale,
                       "weights": robust * inv_sig ** 2}


def diag_inverse(weights, design, ridge, n):
    """Variance of each unknown: exact for small systems, else 1/diag(N).

    Exact (diagonal of the dense inverse of the normal matrix) up to 1,000
    unknowns; above, the inverse of the normal matrix's diagonal, which
    ignores the accumulation of errors along the paths to the reference (an
    under-estimate, cheap for 10^4 nodes).

    Parameters
    ----------
    weights : numpy.ndarray (m,)
        Row weights (``robust / sigma^2``).
    design : scipy.sparse matrix (m, n)
    ridge : numpy.ndarray (n,) or None
    n : int
        Number of unknowns.

    Returns
    -------
    variance : numpy.ndarray (n,)
    method : {"exact", "diagonal"}
    """
    normal = normal_matrix(design, weights, ridge)
    if n <= _EXACT_UNCERTAINTY_MAX_UNKNOWNS:
        try:
            inv = np.linalg.inv(normal.toarray())
            return np.clip(np.diag(inv), 0.0, None), "exact"
        except np.linalg.LinAlgError:
            pass
    d = normal.diagonal()
    with np.errstate(divide="ignore"):
        return np.where(d > 0, 1.0 / np.where(d > 0, d, 1.0), np.inf), "diagonal"
