"""Optimizers preconditioned by an estimate of the Hessian that the caller computes: Sophia
(SophiaG), as the authors' ``sophia-opt`` package."""

from __future__ import annotations

from gradxform import _validate
from gradxform._base import GradientTransformation, chain
from gradxform._types import ScalarOrSchedule
from gradxform.optimizers._links import check_common, decay_link, optional
from gradxform.transforms.scaling import scale, scale_by_learning_rate
from gradxform.transforms.sophia import check_sophia, scale_by_sophia

# The authors' SophiaG adds this to the denominator, and has no argument for it.
SOPHIA_EPS = 1e-15


def sophia(
    learning_rate: ScalarOrSchedule,
    *,
    b1: float = 0.965,
    b2: float = 0.99,
    rho: float = 0.04,
    weight_decay: float = 0.1,
    hessian_update_interval: int = 10,
    maximize: bool = False,
) -> GradientTransformation:
    """Sophia (SophiaG, Liu et al., 2023), as the authors' ``SophiaG`` (PyPI ``sophia-opt``).

    Every ``hessian_update_interval`` steps (``k = 0, K, 2K, ...``) the caller computes the
    Gauss-Newton-Bartlett estimate ``h = B * g_hat^2`` (:func:`gauss_newton_bartlett`, already
    multiplied by the batch size ``B``) and passes it; the other steps pass nothing::

        updates, state = opt.update(grads, state, params, hessian=h)   # k % K == 0
        updates, state = opt.update(grads, state, params)              # otherwise

    which is the authors' ``update_hessian()`` then ``step(bs=B)`` on the first kind of step and
    ``step(bs=B)`` on the others (their ``hess`` holds the average of ``g_hat^2``, ours of
    ``B g_hat^2``)::

        H <- b2 * H + (1 - b2) * h                     (given h)
        m <- b1 * m + (1 - b1) * g
        p <- p - lr * weight_decay * p - lr * sign(m) * min(|m| / (rho * H + 1e-15), 1)

    The optimizer folds in every estimate it is given: ``hessian_update_interval`` is the
    training loop's ``K`` (checked here, used by the caller), as in the authors' code, where
    the loop decides when to call ``update_hessian()``. Under ``jit`` the two kinds of call are
    two traces. Sophia's own estimate can be averaged over devices before it is passed.
    Complex params are refused (see :func:`scale_by_sophia`).

    Args:
      learning_rate: ``lr``, a number or a schedule (the paper's ``rho * eta_t``).
      b1: decay of the momentum, in [0, 1).
      b2: decay of the Hessian average per estimate, in [0, 1).
      rho: the Hessian's scale against the momentum (>= 0): a larger ``rho`` clips fewer
        coordinates.
      weight_decay: decoupled decay (>= 0), applied as ``p <- p (1 - lr weight_decay)``.
      hessian_update_interval: ``K``, the steps between Hessian estimates (a whole number >= 1).
      maximize: ascend the objective instead (the gradient is negated first), as ``SophiaG``'s.

    Returns:
      ``chain(scale_by_sophia, add_decayed_weights, scale_by_learning_rate)``. Liu, Li, Hall,
      Liang & Ma, "Sophia: A Scalable Stochastic Second-order Optimizer for Language Model
      Pre-training", ICLR 2024.

    Example:
      >>> import jax, jax.numpy as jnp, gradxform as gx
      >>> opt, params = gx.sophia(0.1, weight_decay=0.0), {"w": jnp.array([1.0, -2.0])}
      >>> state, grads = opt.init(params), {"w": jnp.array([0.5, -4.0])}
      >>> hessian = {"w": jnp.array([100.0, 100.0])}
      >>> updates, state = opt.update(grads, state, params, hessian=hessian)
      >>> [round(float(u), 5) for u in updates["w"]]
      [-0.04375, 0.1]
    """
    who = "sophia"
    check_common(who, learning_rate, weight_decay)
    check_sophia(who, b1, b2, rho, SOPHIA_EPS)
    # Only the caller uses it, so an injected (array) value is as good as a Python int.
    _validate.count(who, "hessian_update_interval", hessian_update_interval, traced_ok=True)
    _validate.boolean(who, "maximize", maximize)
    return chain(
        *optional(maximize, scale(-1.0)),
        scale_by_sophia(b1, b2=b2, rho=rho, eps=SOPHIA_EPS),
        *decay_link(who, weight_decay),
        scale_by_learning_rate(learning_rate),
    )
