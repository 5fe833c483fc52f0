"""Averaged stochastic gradient descent: SGD with a decaying step and a decay of the params,
and the running average of the params it visits, as ``torch.optim.ASGD``.

The step size ``eta`` and the averaging weight ``mu`` are state, as in torch, and the
transformation reads the params (the decay) and computes the new params ``p + u`` itself (the
average), so it needs ``params`` and comes last in a chain.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _checks, _tree, _validate
from gradxform._base import GradientTransformation, expect_state, find_state, require_params
from gradxform._types import StepCount
from gradxform.transforms.complex import merge


class ScaleByAsgdState(NamedTuple):
    """``count`` (int32); ``eta``, the step size of the next update, and ``mu``, the weight of
    the next params in the average (scalars in float32, or float64 with x64, as torch keeps
    them in its default dtype); ``ax``, the averaged params, one leaf per param.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx, params = gx.scale_by_asgd(0.1, lambd=0.0), jnp.ones(2)
      >>> _, state = tx.update(jnp.array([1.0, -2.0]), tx.init(params), params)
      >>> state.count, state.eta, state.mu, state.ax  # ax_1 = p + u_1
      (Array(1, dtype=int32), Array(0.1, dtype=float32), Array(1., dtype=float32), Array([0.9, 1.2],
      dtype=float32))
    """

    count: StepCount
    eta: jax.Array
    mu: jax.Array
    ax: Any


def check_asgd(who: str, learning_rate: Any, lambd: Any, alpha: Any, t0: Any) -> None:
    """ASGD's hyperparameters: the initial step size, the decay, its power and the start."""
    _validate.non_negative(who, "learning_rate", learning_rate)
    _validate.non_negative(who, "lambd", lambd)
    _validate.non_negative(who, "alpha", alpha)
    _validate.non_negative(who, "t0", t0)


def scale_by_asgd(
    learning_rate: float = 1e-2,
    *,
    lambd: float = 1e-4,
    alpha: float = 0.75,
    t0: float = 1e6,
) -> GradientTransformation:
    """ASGD's descent step and average (Polyak & Juditsky, 1992), as ``torch.optim.ASGD``.

    With ``eta_1 = learning_rate`` and ``mu_1 = 1``, the ``t``-th update is::

        u_t = -eta_t * (g_t + lambd * p)          (so p + u = p (1 - lambd eta_t) - eta_t g_t)
        ax_t = p + u_t                            if mu_t == 1
        ax_t = ax_{t-1} + mu_t * (p + u_t - ax_{t-1})   otherwise
        eta_{t+1} = learning_rate / (1 + lambd * learning_rate * t)^alpha
        mu_{t+1} = 1 / max(1, t - t0)

    For a whole number ``t0`` this makes ``ax_t`` the mean of the params after the updates
    ``t0 + 2, ..., t`` (a copy of the params until then). The step-size schedule is that of
    Xu (2011) and Bottou (2012). The update is the final one, with its sign (no learning rate
    follows), and ``ax`` averages the params ``p + u`` that applying it gives: place it last
    in a chain. Read the average with :func:`asgd_averaged_params`.

    Args:
      learning_rate: the initial step size ``eta_1`` (>= 0).
      lambd: the decay of the params, also in the step-size schedule (>= 0).
      alpha: the power of the step-size schedule (>= 0).
      t0: the step from which the params are averaged (>= 0).

    Returns:
      A transformation whose state is :class:`ScaleByAsgdState`. Needs ``params``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx, params = gx.scale_by_asgd(0.1, lambd=0.0), jnp.ones(2)
      >>> tx.update(jnp.array([1.0, -2.0]), tx.init(params), params)[0]  # -eta_1 g
      Array([-0.1,  0.2], dtype=float32)
    """
    who = "scale_by_asgd"
    check_asgd(who, learning_rate, lambd, alpha, t0)

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        dtype = _tree.default_float_dtype()
        return ScaleByAsgdState(
            count=jnp.zeros([], jnp.int32),
            # A copy: an injected learning rate's array must not be shared with the state.
            eta=jnp.array(learning_rate, dtype, copy=True),
            mu=jnp.ones([], dtype),
            ax=_tree.tree_zeros_like(params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        expect_state(who, state, ScaleByAsgdState)
        require_params(who, params, "its step decays them, and its average is of `params + u`")
        _checks.check_updates(who, updates, params, "param")
        count = _tree.safe_increment(state.count)
        eta, mu = state.eta, state.mu

        def leaf(g, p, ax):
            dtype = _tree.compute_dtype(g.dtype, p.dtype, ax.dtype)
            out_dtype = _tree.update_dtype(g, p, ax)
            # One product-sum, not eta g + (lambd eta) p: XLA contracts a sum of two products
            # into a fused multiply-add around either one, differently in different programs.
            direction = g.astype(dtype) + _tree.cast_scalar(lambd, dtype) * p.astype(dtype)
            u = -_tree.cast_scalar(eta, dtype) * direction
            q = (p + u).astype(p.dtype)  # the new param, as apply_updates rounds it
            ax32, q32 = ax.astype(dtype), q.astype(dtype)
            blended = ax32 + (q32 - ax32) * _tree.cast_scalar(mu, dtype)
            # mu == 1 copies the params, as torch does, rather than adding (p - ax) * 1 to ax.
            new_ax = jnp.where(mu == 1, q32, blended)
            return u.astype(out_dtype), new_ax.astype(ax.dtype)

        u, ax = _tree.tree_map_multi(leaf, 2, updates, params, state.ax)
        steps = count.astype(eta.dtype)
        new_eta = learning_rate / (1 + lambd * learning_rate * steps) ** alpha
        new_mu = 1 / jnp.maximum(1, steps - t0)
        return u, ScaleByAsgdState(count, new_eta.astype(eta.dtype), new_mu.astype(mu.dtype), ax)

    return GradientTransformation(init_fn, update_fn)


def asgd_averaged_params(state: Any) -> Any:
    """ASGD's averaged params (torch's ``state["ax"]``), from its state or a state holding it.

    Complex params, which :func:`gradxform.asgd` averages as (real, imaginary) pairs, come back
    complex.

    Args:
      state: the state of :func:`gradxform.asgd` or :func:`scale_by_asgd`, or of anything
        that holds exactly one :class:`ScaleByAsgdState`.

    Returns:
      The averaged params, a tree like the params.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt = gx.asgd(0.5, lambd=0.0, t0=0.0)
      >>> params = {"w": jnp.zeros(1)}
      >>> state = opt.init(params)
      >>> for g in (-2.0, -2.0, -2.0):  # params become 1, 2, 3
      ...     updates, state = opt.update({"w": jnp.array([g])}, state, params)
      ...     params = gx.apply_updates(params, updates)
      >>> gx.asgd_averaged_params(state)["w"].tolist()  # from update t0 + 2 = 2 on: (2 + 3) / 2
      [2.5]
    """
    return merge(find_state(state, ScaleByAsgdState, "asgd_averaged_params").ax)
