"""The Polyak step size: a step that reaches the (estimated) minimum value along the gradient."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gradxform import _checks, _tree, _validate
from gradxform._base import EmptyState, GradientTransformation

VARIANTS = ("sps", "sps+")


def scale_by_polyak(
    f_min: float = 0.0,
    max_learning_rate: float = 1.0,
    eps: float = 0.0,
    variant: str = "sps",
) -> GradientTransformation:
    """Scales the updates by the Polyak step size (Polyak, 1987; Loizou et al., 2021).

    With ``f`` the loss at the params (``update(..., value=f)``) and ``g`` the updates::

        gap = f - f_min                      (max(gap, 0) for variant "sps+")
        s = 0 if ||g||^2 + eps <= 2.2e-16 else min(gap / (||g||^2 + eps), max_learning_rate)
        u <- s * g

    Args:
      f_min: a lower bound of the loss (its minimum, if known).
      max_learning_rate: the largest step (>= 0).
      eps: added to the squared norm (>= 0).
      variant: ``"sps"`` or ``"sps+"`` (the gap clipped at 0).

    Returns:
      A stateless transformation whose ``update`` needs ``value=``, the loss.

    References:
      Loizou et al., `Stochastic Polyak Step-size for SGD: An Adaptive Learning Rate for Fast
      Convergence <https://arxiv.org/abs/2002.10542>`_, 2021; Berrada et al., `Training Neural
      Networks for and by Interpolation <https://arxiv.org/abs/1906.05661>`_, 2020.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.scale_by_polyak()
      >>> # f = 1, ||g||^2 = 2: the step size is (f - f_min) / ||g||^2 = 0.5
      >>> tx.update(jnp.array([1.0, -1.0]), tx.init(jnp.zeros(2)), value=jnp.array(1.0))[0]
      Array([ 0.5, -0.5], dtype=float32)
    """
    who = "scale_by_polyak"
    _validate.finite(who, "f_min", f_min)
    _validate.non_negative(who, "max_learning_rate", max_learning_rate)
    _validate.non_negative(who, "eps", eps)
    _validate.choice(who, "variant", variant, VARIANTS)
    # Optax compares with float's epsilon (float64's, whatever the precision).
    tiny = float(np.finfo(float).eps)

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        return EmptyState()

    def update_fn(updates, state, params=None, *, value=None, **extra_args):
        del extra_args
        if value is None:
            raise ValueError(
                f"{who} needs the loss: call `update(updates, state, params, value=loss)`"
            )
        if jnp.shape(value) != ():
            raise ValueError(f"{who}: `value` must be a scalar loss, got shape {jnp.shape(value)}")
        _checks.check_against_params(who, updates, params)
        squared_norm = _tree.tree_squared_norm(updates)
        dtype = squared_norm.dtype
        gap = jnp.asarray(value).astype(dtype) - _tree.cast_scalar(f_min, dtype)
        if variant == "sps+":
            gap = jnp.maximum(gap, 0)
        denominator = squared_norm + _tree.cast_scalar(eps, dtype)
        small = denominator <= tiny
        step = jnp.minimum(
            gap / jnp.where(small, 1, denominator), _tree.cast_scalar(max_learning_rate, dtype)
        )
        step = jnp.where(small, 0, step)

        def leaf(u):
            out = _tree.compute_dtype(jnp.result_type(u))
            return _tree.cast_scalar(step, out) * u.astype(out)

        return jax.tree.map(leaf, updates), state

    return GradientTransformation(init_fn, update_fn)
