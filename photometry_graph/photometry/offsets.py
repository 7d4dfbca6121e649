"""Offsets (and planes) of the global solve: linear once the gains are known.

With the gains known, an edge ``src = i``, ``dst = j`` with the moments
``x_mean``/``y_mean`` at the overlap centroid ``c`` asks

* ``o_i + p_i.(c - origin) - o_j - p_j.(c - origin) = g_j y_mean - g_i x_mean``
  (every non-failed edge, ``"offset_only"`` included);
* ``p_i - p_j = g_j y_slope - g_i x_slope`` (``model="plane"``).

:func:`offsets_for_channel` solves these rows by the same robust sparse least
squares as the gains (:func:`.lsq.irls`, one robust scale per kind of row).
Internally the offset of each node is parametrised at the node's own centre
and slopes are scaled by a typical node size, so the system stays well
conditioned whatever ``origin`` is.
"""

import numpy as np
import scipy.sparse as sp

from .lsq import diag_inverse, irls

__all__ = ["offsets_for_channel"]


def offsets_for_channel(problem, g, info, *, iterations, solver):
    """Offsets at node centres (and scaled slopes) of one component and channel.

    Parameters
    ----------
    problem : ChannelProblem
    g : numpy.ndarray (n,)
        Gains of the component's nodes.
    info : dict
        Solve statistics, updated in place (``iterations_offset``,
        ``scale_offset``, ``uncertainty_method``).
    iterations : int
        Robust reweighting iterations.
    solver : {"direct", "lsqr"}

    Returns
    -------
    o_t : numpy.ndarray (n,)
        Offsets at the node centres.
    p_t : numpy.ndarray (n, 2)
        Slopes times ``problem.length`` (zeros for the offset model).
    var_o, var_p : numpy.ndarray
        Their variances (NaN for nodes that do not reach the reference).
    weights : numpy.ndarray
        Robust weights of the moment rows.
    """
    nl, reach, cen, length = problem.n, problem.reach, problem.centres, problem.length
    es, ed = problem.src, problem.dst
    plane = problem.plane
    npar = 3 if plane else 1
    free, col, nfree = problem.free_columns()
    k = len(es)
    xm, ym = problem.x_mean, problem.y_mean
    gi, gj = g[es], g[ed]
    rhs_o = gj * ym - gi * xm
    sig_o = problem.moment_sigma(gi, gj)
    centroid = problem.centroid
    r_i, c_i, v_i = [], [], []
    row_id = np.arange(k)
    for nodes, sign in ((es, 1.0), (ed, -1.0)):
        keep = free[nodes]
        base = col[nodes[keep]] * npar
        r_i.append(row_id[keep]); c_i.append(base); v_i.append(np.full(keep.sum(), sign))
        if plane:
            dd = (centroid[keep] - cen[nodes[keep]]) / length
            for ax in range(2):
                r_i.append(row_id[keep]); c_i.append(base + 1 + ax)
                v_i.append(sign * dd[:, ax])
    rhs = [rhs_o]
    sig = [sig_o]
    groups = [np.zeros(k, dtype=np.int64)]
    n_rows = k
    if plane:
        xs, ys = problem.x_slope, problem.y_slope
        for ax in range(2):
            val = length * (gj * ys[:, ax] - gi * xs[:, ax])
            good = np.isfinite(val)
            ext = problem.extent[:, ax]
            s_ax = sig_o * np.sqrt(12.0) / ext * length
            rid = n_rows + np.arange(good.sum())
            idx_good = np.nonzero(good)[0]
            for nodes, sign in ((es, 1.0), (ed, -1.0)):
                nn = nodes[idx_good]
                keep = free[nn]
                r_i.append(rid[keep]); c_i.append(col[nn[keep]] * npar + 1 + ax)
                v_i.append(np.full(keep.sum(), sign))
            rhs.append(val[good]); sig.append(s_ax[good])
            groups.append(np.full(good.sum(), 1 + ax, dtype=np.int64))
            n_rows += int(good.sum())
    design = sp.csr_matrix((np.concatenate(v_i), (np.concatenate(r_i), np.concatenate(c_i))),
                           shape=(n_rows, nfree * npar))
    rhs = np.concatenate(rhs)
    sig = np.concatenate(sig)
    groups = np.concatenate(groups)
    ridge = None
    if plane:  # a whisper of regularisation keeps leaf nodes without slope rows solvable
        ridge = np.zeros(nfree * npar)
        ridge[np.arange(nfree) * npar + 1] = ridge[np.arange(nfree) * npar + 2] = (
            1e-12 * float(np.median(1.0 / sig_o ** 2)))
    x, robust, sinfo = irls(design, rhs, sig, iterations=iterations, groups=groups,
                            ridge=ridge, solver=solver)
    var, method = diag_inverse(sinfo["weights"], design, ridge, nfree * npar)
    if method == "diagonal":
        info["uncertainty_method"] = "diagonal"
    scale = {gk: max(1.0, v) for gk, v in sinfo["scale"].items()}
    var = var * scale.get(0, 1.0) ** 2
    info["iterations_offset"].append(sinfo["iterations"])
    info["scale_offset"].append(sinfo["scale"].get(0, np.nan))
    o_t = np.zeros(nl)
    p_t = np.zeros((nl, 2))
    var_o = np.zeros(nl)
    var_p = np.zeros((nl, 2))
    sol = x.reshape(nfree, npar)
    vv = var.reshape(nfree, npar)
    o_t[free] = sol[:, 0]
    var_o[free] = vv[:, 0]
    if plane:
        p_t[free] = sol[:, 1:]
        var_p[free] = vv[:, 1:]
    var_o[~reach] = np.nan
    var_p[~reach] = np.nan
    return o_t, p_t, var_o, var_p, robust[:k]
