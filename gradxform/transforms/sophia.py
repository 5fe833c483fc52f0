"""Sophia's clipped, Hessian-preconditioned momentum (SophiaG, the authors' rule) and the
Gauss-Newton-Bartlett estimate of the Hessian's diagonal that feeds it.

The Hessian estimate is the caller's: ``update(..., hessian=h)`` folds ``h`` into the state's
average before the step, on whichever steps the caller computes one (the authors compute it
every ``k = 10`` steps, from labels sampled from the model's own predictions:
:func:`gauss_newton_bartlett`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _checks, _tree, _validate
from gradxform._base import GradientTransformation, expect_state
from gradxform._types import StepCount


class ScaleBySophiaState(NamedTuple):
    """``count`` (int32), the momentum ``mu`` and ``hessian``, the running average of the
    caller's Hessian estimates, one leaf per param in its dtype.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.scale_by_sophia()
      >>> _, state = tx.update(jnp.ones(2), tx.init(jnp.zeros(2)), hessian=jnp.array([100.0, 1.0]))
      >>> state.count, [round(float(x), 4) for x in state.hessian]  # (1 - b2) h
      (Array(1, dtype=int32), [1.0, 0.01])
    """

    count: StepCount
    mu: Any
    hessian: Any


def check_sophia(who: str, b1: Any, b2: Any, rho: Any, eps: Any) -> None:
    """The arguments of :func:`scale_by_sophia`, checked for ``who``."""
    _validate.probability(who, "b1", b1)
    _validate.probability(who, "b2", b2)
    _validate.non_negative(who, "rho", rho)
    _validate.non_negative(who, "eps", eps)


def _refuse_complex(who: str, params: Any) -> None:
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        dtype = jnp.result_type(leaf)
        if jnp.issubdtype(dtype, jnp.complexfloating):
            raise TypeError(
                f"{who}: parameter {_tree.path_name(path)} is complex ({dtype}); the authors' "
                "SophiaG squares a complex gradient as a complex number (g * g, not |g|^2), "
                "which gives no curvature to follow; keep complex leaves out of its tree."
            )


def scale_by_sophia(
    b1: float = 0.965,
    *,
    b2: float = 0.99,
    rho: float = 0.04,
    eps: float = 1e-15,
) -> GradientTransformation:
    """SophiaG's update direction (Liu et al., 2023), as the authors' ``SophiaG.step``.

    ::

        H_t = b2 * H_{t-1} + (1 - b2) * h_t      (only on the steps given ``hessian=h_t``;
                                                  H_t = H_{t-1} on the others)
        m_t = b1 * m_{t-1} + (1 - b1) * g_t
        u_t = sign(m_t) * min(|m_t| / (rho * H_t + eps), 1)

    ``h_t`` is the Gauss-Newton-Bartlett estimate ``B * g_hat^2`` (:func:`gauss_newton_bartlett`),
    already multiplied by the batch size ``B``. The authors keep the average of ``g_hat^2`` and
    multiply it by ``bs`` in the step (``rho * bs * hess``); keeping the average of ``B g_hat^2``
    instead gives the same numbers for a constant ``B`` (to rounding; exactly for a power of
    two) and lets the batch size change between estimates. ``H_0 = 0``: until the first
    estimate every ratio is clipped and the step is ``sign(m_t)``. Nothing is bias-corrected.

    A given ``hessian`` is always folded in: the caller decides on which steps to compute one
    (the count in the state is traced, so no step can refuse it). ``hessian=None`` is the same
    as no estimate.

    Args:
      b1: decay of the momentum, in [0, 1).
      b2: decay of the Hessian average, in [0, 1) (per estimate, not per step).
      rho: the scale of the Hessian against the momentum (>= 0), the authors' ``rho``.
      eps: added to the denominator (>= 0); the authors' fixed 1e-15.

    Returns:
      A transformation whose state is :class:`ScaleBySophiaState`; its ``update`` takes
      ``hessian=`` (a tree like the params, or ``None``). Liu, Li, Hall, Liang & Ma, "Sophia:
      A Scalable Stochastic Second-order Optimizer for Language Model Pre-training", 2023.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx, g = gx.scale_by_sophia(), jnp.array([1.0, -1.0])
      >>> u1, state = tx.update(g, tx.init(g))  # no estimate yet: H = 0, sign(m)
      >>> # m = 0.035 (1 + b1) g, H = 0.01 h: |m| / (rho H) = 0.068775 / 0.08 and 171.9
      >>> u2, state = tx.update(g, state, hessian=jnp.array([200.0, 1.0]))
      >>> u1, [round(float(x), 4) for x in u2]
      (Array([ 1., -1.], dtype=float32), [0.8597, -1.0])
    """
    who = "scale_by_sophia"
    check_sophia(who, b1, b2, rho, eps)
    # A traced eps may be 0, and then so may the denominator.
    may_be_zero = not _validate.is_static_nonzero(eps)

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        _refuse_complex(who, params)
        return ScaleBySophiaState(
            count=jnp.zeros([], jnp.int32),
            mu=_tree.tree_zeros_like(params),
            hessian=_tree.tree_zeros_like(params),
        )

    def update_fn(updates, state, params=None, hessian=None, **extra_args):
        del params, extra_args
        expect_state(who, state, ScaleBySophiaState)
        _checks.check_updates(who, updates, state.mu, "momentum")
        if hessian is not None:
            _checks.check_updates(
                who, hessian, state.hessian, "Hessian average (which `hessian=` updates)"
            )

        def leaf(g, m, big_h, h):
            dtype = _tree.compute_dtype(g.dtype, m.dtype, big_h.dtype)
            if h is not None:
                dtype = _tree.compute_dtype(dtype, h.dtype)
                big_h = _tree.moment_update(big_h, h.astype(dtype), b2, dtype)
            new_m = _tree.moment_update(m, g.astype(dtype), b1, dtype)
            denominator = _tree.cast_scalar(rho, dtype) * big_h.astype(dtype)
            denominator = denominator + _tree.cast_scalar(eps, dtype)
            ratio = jnp.minimum(_tree.safe_divide(jnp.abs(new_m), denominator, may_be_zero), 1)
            if may_be_zero:
                # |m| / 0 is unbounded, so clipped to 1 (sign(m) makes it 0 where m is 0).
                ratio = jnp.where(denominator == 0, 1, ratio)
            u = jnp.sign(new_m) * ratio
            return (
                u.astype(_tree.update_dtype(g, m, big_h)),
                new_m.astype(m.dtype),
                big_h.astype(m.dtype),
            )

        estimates = jax.tree.map(lambda _: None, state.mu) if hessian is None else hessian
        u, mu, big_h = _tree.tree_map_multi(leaf, 3, updates, state.mu, state.hessian, estimates)
        return u, ScaleBySophiaState(_tree.safe_increment(state.count), mu, big_h)

    return GradientTransformation(init_fn, update_fn)


def gauss_newton_bartlett(
    logits_fn: Callable[..., jax.Array],
    params: Any,
    key: jax.Array,
    *args: Any,
) -> Any:
    """The Gauss-Newton-Bartlett estimate of the Hessian's diagonal, as the authors' training
    loop computes it for :func:`scale_by_sophia` (``hessian=``).

    ::

        z = logits_fn(params, *args)                 (..., V): B rows of V logits
        y_hat ~ Categorical(softmax(z))              one label per row (jax.random.categorical)
        g_hat = grad_params mean_rows CE(z, y_hat)
        h = B * g_hat^2

    ``B`` is the number of rows (every position of ``z`` but the last axis), the authors'
    ``bs`` (batch size times block size for a language model), so that ``h`` is what their
    ``update_hessian()`` followed by ``step(bs=B)`` uses. One forward and one backward pass.

    Args:
      logits_fn: ``(params, *args) -> logits``, the model's logits, the classes on the last axis.
      params: where to take the estimate.
      key: the random key that samples the labels.
      *args: the rest of ``logits_fn``'s arguments (the batch's inputs).

    Returns:
      A tree like ``params``. Liu et al., "Sophia: A Scalable Stochastic Second-order
      Optimizer for Language Model Pre-training", 2023, Algorithm 2.

    Example:
      >>> import jax, jax.numpy as jnp, gradxform as gx
      >>> logits_fn = lambda params: params  # B = 2 rows of V = 2 logits, all 0
      >>> # grad of the mean CE: (softmax - onehot) / B = +-1/4, whichever label is drawn
      >>> gx.gauss_newton_bartlett(logits_fn, jnp.zeros((2, 2)), jax.random.key(0))  # B g_hat^2
      Array([[0.125, 0.125],
             [0.125, 0.125]], dtype=float32)
    """
    logits, pullback = jax.vjp(lambda p: logits_fn(p, *args), params)
    labels = jax.random.categorical(key, jax.lax.stop_gradient(logits))
    rows = logits.size // logits.shape[-1]
    # d mean CE / d logits = (softmax(z) - onehot(y_hat)) / B, in the logits' dtype.
    probabilities = jax.nn.softmax(logits.astype(_tree.compute_dtype(logits.dtype)), axis=-1)
    onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=probabilities.dtype)
    (g_hat,) = pullback(((probabilities - onehot) / rows).astype(logits.dtype))
    return jax.tree.map(lambda g: (rows * g * g).astype(g.dtype), g_hat)
