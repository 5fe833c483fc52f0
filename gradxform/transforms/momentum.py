"""Momentum: heavy-ball and Nesterov traces, and exponential moving averages."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _checks, _tree, _validate
from gradxform._base import GradientTransformation, expect_state
from gradxform._types import StepCount


class TraceState(NamedTuple):
    """``count``: updates made (int32); ``trace``: the momentum buffer, one leaf per param.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.trace(0.9)
      >>> _, state = tx.update(jnp.array([1.0, -2.0]), tx.init(jnp.zeros(2)))
      >>> state  # the first buffer is the gradient itself, as torch's
      TraceState(count=Array(1, dtype=int32), trace=Array([ 1., -2.], dtype=float32))
    """

    count: StepCount
    trace: Any


class EmaState(NamedTuple):
    """``count``: updates made (int32); ``ema``: the moving average, one leaf per param.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.ema(0.9)
      >>> _, state = tx.update(jnp.array([1.0, -2.0]), tx.init(jnp.zeros(2)))
      >>> state.count, [round(float(x), 4) for x in state.ema]  # (1 - decay) g, not debiased
      (Array(1, dtype=int32), [0.1, -0.2])
    """

    count: StepCount
    ema: Any


def trace(
    decay: float,
    nesterov: bool = False,
    accumulator_dtype: Any | None = None,
    *,
    dampening: float = 0.0,
) -> GradientTransformation:
    """Momentum, as in ``torch.optim.SGD``.

    With ``b`` the buffer, ``mu = decay`` and ``tau = dampening``::

        b_1 = g_1                                  (the first gradient, as torch does)
        b_t = mu * b_{t-1} + (1 - tau) * g_t
        u_t = g_t + mu * b_t   if nesterov   else   b_t

    Args:
      decay: the momentum ``mu`` (>= 0).
      nesterov: use Nesterov's look-ahead form; needs ``decay > 0`` and no dampening.
      accumulator_dtype: dtype of the buffer; by default each param's dtype.
      dampening: ``tau``, the fraction of the gradient held back (torch's ``dampening``).

    Returns:
      A transformation whose state is :class:`TraceState`.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx, g = gx.trace(0.9), jnp.array([1.0, 2.0])
      >>> u1, state = tx.update(g, tx.init(g))
      >>> u2, state = tx.update(g, state)
      >>> u1, [round(float(x), 4) for x in u2]  # g, then 0.9 g + g
      (Array([1., 2.], dtype=float32), [1.9, 3.8])
    """
    who = "trace"
    _validate.non_negative(who, "decay", decay)
    _validate.boolean(who, "nesterov", nesterov)
    _validate.dtype(who, "accumulator_dtype", accumulator_dtype)
    _validate.non_negative(who, "dampening", dampening)
    if nesterov and _validate.is_static_zero(decay):
        raise ValueError(f"{who}: `nesterov=True` needs a momentum `decay` > 0, got {decay!r}")
    if nesterov and _validate.is_static_nonzero(dampening):
        raise ValueError(f"{who}: `nesterov=True` needs `dampening=0`, got {dampening!r}")
    undampened = _validate.is_static_zero(dampening)

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        return TraceState(
            count=jnp.zeros([], jnp.int32),
            trace=_tree.tree_zeros_like(params, accumulator_dtype),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        expect_state(who, state, TraceState)
        _checks.check_updates(who, updates, state.trace, "momentum buffer")
        gradient_weight: float | jax.Array
        if undampened:
            gradient_weight = 1
        else:
            # The buffer starts at zero, so weighting the first gradient by 1 makes it b_1 = g_1.
            gradient_weight = jnp.where(state.count == 0, 1.0, 1.0 - jnp.asarray(dampening))

        def leaf(g, b):
            dtype = _tree.compute_dtype(g.dtype, b.dtype)
            mu = _tree.cast_scalar(decay, dtype)
            g32 = g.astype(dtype)
            weighted = g32 if undampened else _tree.cast_scalar(gradient_weight, dtype) * g32
            new_b = mu * b.astype(dtype) + weighted
            u = g32 + mu * new_b if nesterov else new_b
            return u.astype(_tree.update_dtype(g, b)), new_b.astype(b.dtype)

        updates, new_trace = _tree.tree_map_multi(leaf, 2, updates, state.trace)
        return updates, TraceState(count=_tree.safe_increment(state.count), trace=new_trace)

    return GradientTransformation(init_fn, update_fn)


def _lerp(e: jax.Array, g: jax.Array, decay: Any, dtype: Any) -> jax.Array:
    """``decay * e + (1 - decay) * g`` as ``torch.lerp(e, g, 1 - decay)`` computes it, with one
    product: ``e + (1 - decay) * (g - e)`` for ``decay > 0.5``, else ``g - decay * (g - e)``
    (exact at both ends). The sum of two products would be contracted by XLA into a fused
    multiply-add around either one, differently on flat buffers than on the tree."""
    d = _tree.cast_scalar(decay, dtype)
    difference = g - e
    if _validate.is_static_number(decay):
        return e + (1 - d) * difference if decay > 0.5 else g - d * difference
    return jnp.where(d > 0.5, e + (1 - d) * difference, g - d * difference)


def ema(
    decay: float, debias: bool = True, accumulator_dtype: Any | None = None
) -> GradientTransformation:
    """Exponential moving average of the updates.

    ::

        e_t = decay * e_{t-1} + (1 - decay) * g_t,   e_0 = 0
        u_t = e_t / (1 - decay^t)   if debias   else   e_t

    Args:
      decay: in [0, 1) (or [0, 1] without ``debias``).
      debias: divide by ``1 - decay^t`` so that early averages are not biased towards 0.
      accumulator_dtype: dtype of the average; by default each param's dtype.

    Returns:
      A transformation whose state is :class:`EmaState`.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx, g = gx.ema(0.5), jnp.array([1.0, -2.0])
      >>> u1, state = tx.update(g, tx.init(g))
      >>> u2, state = tx.update(jnp.zeros(2), state)  # e_2 = 0.25 g, debiased by 1 - 0.25
      >>> u1, [round(float(x), 4) for x in u2]
      (Array([ 1., -2.], dtype=float32), [0.3333, -0.6667])
    """
    who = "ema"
    _validate.boolean(who, "debias", debias)
    _validate.probability(who, "decay", decay, closed=not debias)
    _validate.dtype(who, "accumulator_dtype", accumulator_dtype)

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        return EmaState(
            count=jnp.zeros([], jnp.int32), ema=_tree.tree_zeros_like(params, accumulator_dtype)
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        expect_state(who, state, EmaState)
        _checks.check_updates(who, updates, state.ema, "moving average")
        count = _tree.safe_increment(state.count)
        correction = _tree.bias_correction(decay, count) if debias else None

        def leaf(g, e):
            dtype = _tree.compute_dtype(g.dtype, e.dtype)
            new_e = _lerp(e.astype(dtype), g.astype(dtype), decay, dtype)
            u = new_e / _tree.cast_scalar(correction, dtype) if debias else new_e
            return u.astype(_tree.update_dtype(g, e)), new_e.astype(e.dtype)

        updates, new_ema = _tree.tree_map_multi(leaf, 2, updates, state.ema)
        return updates, EmaState(count=count, ema=new_ema)

    return GradientTransformation(init_fn, update_fn)
