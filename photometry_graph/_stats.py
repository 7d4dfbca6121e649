"""Robust statistics shared by every stage: one home for the MAD scale, medians and weights.

Noise estimators, robust weights and the median used on hot paths live here so that each
constant is defined once and every stage computes the same quantity the same way.
"""

import numpy as np

__all__ = ["MAD_TO_SIGMA", "HUBER_K", "TUKEY_C", "MIN_WEIGHT", "median", "robust_weights"]

#: Ratio of the standard deviation to the median absolute deviation of a Gaussian,
#: ``1 / Phi^-1(3/4)``.
MAD_TO_SIGMA = 1.482602218505602
#: Huber's tuning constant (95 % efficiency at the Gaussian).
HUBER_K = 1.345
#: Tukey's biweight tuning constant (95 % efficiency at the Gaussian).
TUKEY_C = 4.685
#: Floor of a robust weight, so that no row of a least-squares problem vanishes entirely.
MIN_WEIGHT = 1e-6


def median(v):
    """Median of a non-empty 1-D array without NaN (``np.median`` without its copies).

    Examples
    --------
    >>> median(np.array([3.0, 1.0, 2.0, 10.0]))
    2.5
    """
    n = v.size
    k = n // 2
    part = np.partition(v, k)
    if n % 2:
        return float(part[k])
    return 0.5 * (float(part[k]) + float(part[:k].max()))


def robust_weights(u, kind):
    """Huber or Tukey weights of residuals already divided by their scale.

    Parameters
    ----------
    u : numpy.ndarray
        Scaled residuals; non-finite entries get weight 1.
    kind : {'huber', 'tukey'}

    Returns
    -------
    numpy.ndarray
        Weights in ``[MIN_WEIGHT, 1]``.

    Examples
    --------
    >>> robust_weights(np.array([0.0, 2.69, 10.0]), "huber").round(3)
    array([1.   , 0.5  , 0.134])
    >>> float(robust_weights(np.array([10.0]), "tukey")[0])
    1e-06
    """
    u = np.abs(np.where(np.isfinite(u), u, 0.0))
    if kind == "huber":
        w = np.where(u <= HUBER_K, 1.0, HUBER_K / np.maximum(u, HUBER_K))
    else:
        w = np.where(u < TUKEY_C, (1.0 - (u / TUKEY_C) ** 2) ** 2, 0.0)
    return np.maximum(w, MIN_WEIGHT)
