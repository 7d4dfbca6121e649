"""Gains of the global solve: log-linear in the gain ratios of the ``"ok"`` edges.

An edge ``src = i``, ``dst = j`` with the gain ratio ``a`` asks
``log g_i - log g_j = log a``.  Per component and channel the nodes linked by
such edges form groups; in the group of the reference (fixed at ``log g = 0``)
the log-gains are initialised by propagating the edge ratios along a
*maximum* spanning tree (weight ``1 / sigma^2``) from the reference, then
refined by sparse weighted least squares over all its edges, iteratively
reweighted (:func:`.lsq.irls`) so that an edge inconsistent with the loops it
sits on (a misregistered tile, a trail) loses its weight.

Nodes without any usable gain edge (only ``"offset_only"`` edges, e.g. flat
sky or a misregistered tile) take their gain from their neighbours: the gain
level of such a group is set so that the mean log-gain step across its edges
to already-solved nodes is zero (a lone node gets the geometric mean of its
solved neighbours); when no neighbour has a gain either, the gain is 1.  Both
cases are logged with a ``[GRID]`` warning.
"""

import numpy as np
import scipy.sparse as sp
from scipy.sparse import csgraph

from .._log import get_logger, grid_warning
from .lsq import diag_inverse, irls

__all__ = ["gains_for_channel"]

logger = get_logger(__name__)


def _spanning_tree_init(n_nodes, ref_local, e_src, e_dst, logratio, sig):
    """Log-gains propagated from the reference along a maximum spanning tree.

    The tree maximises the summed edge weights ``1 / sigma^2`` (Kruskal);
    it is computed as the *minimum* spanning tree of ``sigma^2`` (the same
    tree: only the order of the weights matters) with
    :func:`scipy.sparse.csgraph.minimum_spanning_tree`, about 30 times faster
    than :func:`networkx.maximum_spanning_tree` on 10^4 nodes.

    Returns an array of log-gains (NaN where no tree path exists).
    """
    out = np.full(n_nodes, np.nan)
    out[ref_local] = 0.0
    if len(e_src) == 0:
        return out
    cost = np.maximum(np.asarray(sig, float) ** 2, 1e-300)
    graph = sp.coo_matrix((cost, (e_src, e_dst)), shape=(n_nodes, n_nodes)).tocsr()
    tree = csgraph.minimum_spanning_tree(graph)
    order, pred = csgraph.breadth_first_order(tree, ref_local, directed=False,
                                              return_predecessors=True)
    # signed log ratio per ordered pair: l_s - l_d = lr
    step = {}
    for s_, d_, lr in zip(e_src.tolist(), e_dst.tolist(), np.asarray(logratio).tolist()):
        step[(s_, d_)] = lr
        step[(d_, s_)] = -lr
    for node in order[1:].tolist():
        parent = int(pred[node])
        out[node] = out[parent] - step[(parent, node)]
    return out


def _solve_log_gains(nodes_local, ref_local, edges, logratio, sig, *, iterations, solver):
    """Robust log-gains of one connected set of nodes (reference fixed at 0).

    ``edges``: (k, 2) local node indices (src, dst); ``logratio``: log a.
    Returns log-gains, their variance, robust weights, info.
    """
    n = nodes_local
    free = np.ones(n, dtype=bool)
    free[ref_local] = False
    col = np.cumsum(free) - 1
    k = edges.shape[0]
    init = _spanning_tree_init(n, ref_local, edges[:, 0], edges[:, 1], logratio, sig)
    rows, cols, vals = [], [], []
    for side, sign in ((0, 1.0), (1, -1.0)):
        nodes = edges[:, side]
        keep = free[nodes]
        rows.append(np.nonzero(keep)[0])
        cols.append(col[nodes[keep]])
        vals.append(np.full(keep.sum(), sign))
    design = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                           shape=(k, n - 1))
    x0 = init[free]
    x0 = np.where(np.isfinite(x0), x0, 0.0)
    x, robust, info = irls(design, logratio, sig, iterations=iterations, x0=x0,
                           solver=solver)
    var, method = diag_inverse(info["weights"], design, None, n - 1)
    scale = max(1.0, info["scale"].get(0, 1.0))
    out = np.zeros(n)
    out[free] = x
    v = np.zeros(n)
    v[free] = var * scale ** 2
    info["method"] = method
    info["tree"] = init
    return out, v, robust, info


def _level_on_neighbours(problem, lab, n_groups, assigned, logg, var, info):
    """Give the groups without a solved gain the level of their solved neighbours.

    A group takes the mean log-gain step across its usable edges to assigned
    nodes; groups that never touch one are set to gain 1.  Updates ``logg``,
    ``var``, ``assigned`` and ``info`` in place.
    """
    reach = problem.reach
    pending = {g for g in range(n_groups) if not assigned[lab == g].any()
               and reach[lab == g].any()}
    su, du = problem.src, problem.dst
    while pending:
        progress = False
        for gidx in sorted(pending):
            members = lab == gidx
            link_a = members[su] & assigned[du]
            link_b = members[du] & assigned[su]
            if not (link_a.any() or link_b.any()):
                continue
            steps = np.concatenate([logg[du[link_a]] - logg[su[link_a]],
                                    logg[su[link_b]] - logg[du[link_b]]])
            logg[members] += float(np.mean(steps))
            var[members] = np.nan
            assigned[members] = True
            info["gain_from_neighbours"] += int(members.sum())
            pending.discard(gidx)
            progress = True
        if not progress:
            break
    if pending:
        left = int(sum((lab == g).sum() for g in pending))
        info["gain_set_to_one"] += left
        for g in pending:
            logg[lab == g] = 0.0
        grid_warning(logger, "Photometry: channel %d: %d tile(s) have no gain relation to "
                     "any solved tile; gain set to 1", problem.channel, left)


def gains_for_channel(problem, info, *, iterations, solver):
    """Log-gains of one component and channel.

    Groups of nodes linked by "ok" edges are solved separately; the group of
    the reference is anchored at log g = 0, other groups (and lone nodes) are
    levelled on their already-solved neighbours through their remaining
    (offset-only) edges, else set to gain 1.

    Parameters
    ----------
    problem : ChannelProblem
    info : dict
        Solve statistics, updated in place (``iterations_gain``,
        ``scale_gain``, ``uncertainty_method``, ``gain_from_neighbours``,
        ``gain_set_to_one``).
    iterations : int
        Robust reweighting iterations.
    solver : {"direct", "lsqr"}

    Returns
    -------
    logg : numpy.ndarray (n,)
        Log-gains.
    var : numpy.ndarray (n,)
        Their variance (NaN for gains from neighbours or set to 1).
    weights : numpy.ndarray
        Robust weights of the gain rows.
    """
    nl, ref_l, reach = problem.n, problem.ref, problem.reach
    logg = np.zeros(nl)
    var = np.full(nl, np.nan)
    var[ref_l] = 0.0
    lr = problem.log_a
    sig = problem.sigma_log_a
    s_ok, d_ok = problem.gain_src, problem.gain_dst
    weights = np.ones(len(s_ok))
    if len(s_ok):
        adj = sp.coo_matrix((np.ones(len(s_ok)), (s_ok, d_ok)), shape=(nl, nl))
        n_groups, lab = csgraph.connected_components(adj, directed=False)
    else:
        n_groups, lab = nl, np.arange(nl)
    assigned = np.zeros(nl, dtype=bool)
    for gidx in range(n_groups):
        members = np.nonzero(lab == gidx)[0]
        if not reach[members].any():
            continue
        sel = (lab[s_ok] == gidx)
        if len(members) == 1:
            continue
        if ref_l in members:
            anchor = ref_l
        else:  # provisional anchor: the member with most gain edges
            counts = np.bincount(np.concatenate([s_ok[sel], d_ok[sel]]), minlength=nl)
            anchor = int(members[np.argmax(counts[members])])
        loc = np.full(nl, -1, dtype=np.int64)
        loc[members] = np.arange(len(members))
        edges = np.column_stack([loc[s_ok[sel]], loc[d_ok[sel]]])
        x, v, robust, sinfo = _solve_log_gains(len(members), int(loc[anchor]), edges,
                                               lr[sel], sig[sel], iterations=iterations,
                                               solver=solver)
        logg[members] = x
        var[members] = v
        weights[sel] = robust
        info["iterations_gain"].append(sinfo["iterations"])
        info["scale_gain"].append(sinfo["scale"].get(0, np.nan))
        if sinfo["method"] == "diagonal":
            info["uncertainty_method"] = "diagonal"
        if ref_l in members:
            assigned[members] = True
    if not assigned[ref_l]:
        assigned[ref_l] = True
    _level_on_neighbours(problem, lab, n_groups, assigned, logg, var, info)
    n_neigh = int(np.sum(assigned & ~np.isfinite(var)))
    if n_neigh:
        grid_warning(logger, "Photometry: channel %d: %d tile(s) have no usable gain edge "
                     "(offset-only overlaps); gain taken from their neighbours",
                     problem.channel, n_neigh)
    return logg, var, weights
