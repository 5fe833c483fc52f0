"""D-Adaptation's Adam (``scale_by_dadapt_adam``), with its authors' numbers
(``dadaptation.DAdaptAdam``): the estimate of ``d`` and the early return it shares with Prodigy
live in ``distance_adaptive.py``, whose docstring says how both behave.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _checks, _tree, _validate
from gradxform._base import GradientTransformation, expect_state, require_params
from gradxform._types import ScalarOrSchedule, StepCount
from gradxform.transforms.distance_adaptive import (
    check_arguments,
    flat_leaves,
    kept_on_skip,
    skipped_step,
    step_size,
)
from gradxform.transforms.dog import scalar_dtype


class ScaleByDAdaptAdamState(NamedTuple):
    """``count`` (updates made, int32), ``steps`` (steps that moved, int32), the scalars ``d``
    and ``numerator`` (the reference's ``numerator_weighted``), and per param ``mu`` (the first
    moment of ``dlr g``), ``nu`` (the second moment of ``g``) and ``s``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx, params = gx.scale_by_dadapt_adam(d0=0.5), jnp.zeros(2)
      >>> state = tx.init(params)
      >>> state.count, state.steps, state.d, state.s
      (Array(0, dtype=int32), Array(0, dtype=int32), Array(0.5, dtype=float32), Array([0., 0.],
      dtype=float32))
      >>> _, state = tx.update(jnp.array([0.5, -2.0]), state, params)
      >>> state.steps, state.d, state.numerator  # r = 0: the step before had s = 0
      (Array(1, dtype=int32), Array(0.5, dtype=float32), Array(0., dtype=float32))
    """

    count: StepCount
    steps: jax.Array
    d: jax.Array
    numerator: jax.Array
    mu: Any
    nu: Any
    s: Any


def scale_by_dadapt_adam(
    learning_rate: ScalarOrSchedule = 1.0,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    d0: float = 1e-6,
    growth_rate: float = math.inf,
    use_bias_correction: bool = False,
) -> GradientTransformation:
    """D-Adaptation's Adam step (Defazio & Mishchenko, 2023), as
    ``dadaptation.DAdaptAdam(decouple=True)``, learning rate and decoupled weight decay
    included.

    With ``b = sqrt(b2)``, ``c_k = sqrt(1 - b2^(k+1)) / (1 - b1^(k+1))`` (1 without
    ``use_bias_correction``), ``dlr_k = d_k lr c_k`` and sums over every element of the tree::

        r = b r + (1 - b) dlr_k <g, s / (sqrt(v) + eps)>       (s, v before this step)
        m = b1 m + (1 - b1) dlr_k g,      v = b2 v + (1 - b2) g^2
        s = b s + (1 - b) dlr_k g
        d_{k+1} = max(d_k, min(r / ((1 - b) sum |s|), growth_rate d_k))
        u = m / (sqrt(v) + eps) + weight_decay dlr_k x

    (``u`` is subtracted: :func:`gradxform.dadapt_adamw` chains ``scale(-1)``.) A step with
    ``lr = 0`` or ``sum |s| = 0`` changes nothing (see the module's docstring).

    Args:
      learning_rate: a factor of D-Adaptation's step size (1: its own), a number or a
        schedule; the first moment and the estimate of ``d`` depend on it.
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1); ``r`` and ``s`` decay by ``sqrt(b2)``.
      eps: added to the root of the second moment (>= 0).
      weight_decay: decoupled weight decay, scaled by ``dlr_k`` (>= 0).
      d0: the initial estimate of ``d`` (> 0).
      growth_rate: the most ``d`` may grow per step (>= 1, ``inf`` for no limit).
      use_bias_correction: Adam's bias correction ``c_k`` (with it, the numbers of
        ``optax.contrib.dadapt_adamw``).

    Returns:
      A transformation whose state is :class:`ScaleByDAdaptAdamState`; it needs ``params``
      when ``weight_decay`` may be nonzero. Defazio & Mishchenko, "Learning-Rate-Free Learning
      by D-Adaptation", ICML 2023.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx, params = gx.scale_by_dadapt_adam(d0=0.5), jnp.zeros(2)
      >>> u, _ = tx.update(jnp.array([0.5, -2.0]), tx.init(params), params)
      >>> # the first step: m / sqrt(v) = (1 - b1) d0 g / (sqrt(1 - b2) |g|)
      >>> [round(float(x), 4) for x in u]
      [1.5811, -1.5811]
    """
    who = "scale_by_dadapt_adam"
    check_arguments(who, learning_rate=learning_rate, b1=b1, b2=b2, eps=eps, d0=d0)
    check_arguments(who, weight_decay=weight_decay, growth_rate=growth_rate)
    check_arguments(who, use_bias_correction=use_bias_correction)
    root_b2 = math.sqrt(float(b2)) if _validate.is_static_number(b2) else jnp.sqrt(b2)
    unlimited = _validate.is_static_number(growth_rate) and float(growth_rate) == math.inf
    may_be_zero = not _validate.is_static_nonzero(eps)
    decays = not _validate.is_static_zero(weight_decay)

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        dtype = scalar_dtype(params)
        return ScaleByDAdaptAdamState(
            count=jnp.zeros([], jnp.int32),
            steps=jnp.zeros([], jnp.int32),
            d=jnp.array(d0, dtype),
            numerator=jnp.zeros([], dtype),
            mu=_tree.tree_zeros_like(params),
            nu=_tree.tree_zeros_like(params),
            s=_tree.tree_zeros_like(params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        expect_state(who, state, ScaleByDAdaptAdamState)
        if decays:
            require_params(who, params, "the weight decay is a multiple of the params")
        _checks.check_updates(who, updates, state.mu, "first moment")
        treedef = jax.tree.structure(updates)
        sdtype = state.d.dtype
        d, (lr, dlr) = state.d, step_size(who, learning_rate, state, use_bias_correction, b1, b2)
        b = _tree.cast_scalar(root_b2, sdtype)
        acc = jnp.zeros([], sdtype)
        denominator = jnp.zeros([], sdtype)
        mu, nu, s = [], [], []
        trees = (updates, state.mu, state.nu, state.s)
        for g, m, v, s_old in zip(*(flat_leaves(x, treedef) for x in trees), strict=True):
            dtype = _tree.compute_dtype(g.dtype, m.dtype, v.dtype, s_old.dtype)
            g, s_old = g.astype(dtype), s_old.astype(dtype)
            root = jnp.sqrt(v.astype(dtype)) + _tree.cast_scalar(eps, dtype)
            dot = jnp.sum(g * _tree.safe_divide(s_old, root, may_be_zero)).astype(sdtype)
            acc = acc + dlr * dot
            m_weight = _tree.cast_scalar(dlr * (1 - b1), dtype)
            mu.append(_tree.cast_scalar(b1, dtype) * m.astype(dtype) + m_weight * g)
            nu.append(_tree.square_moment_update(v, g, b2, dtype))
            new_s = (
                _tree.cast_scalar(root_b2, dtype) * s_old
                + _tree.cast_scalar(dlr * (1 - b), dtype) * g
            )
            s.append(new_s)
            denominator = denominator + jnp.sum(jnp.abs(new_s)).astype(sdtype)

        numerator = b * state.numerator + (1 - b) * acc
        skip = skipped_step(learning_rate, lr, denominator)
        d_hat = numerator / ((1 - b) * jnp.where(skip, 1, denominator))
        new_d = jnp.maximum(d, d_hat if unlimited else jnp.minimum(d_hat, d * growth_rate))

        out = []
        leaves_x = flat_leaves(params, treedef) if decays else [None] * len(mu)
        for g, x, m, v in zip(flat_leaves(updates, treedef), leaves_x, mu, nu, strict=True):
            dtype = m.dtype
            root = jnp.sqrt(v) + _tree.cast_scalar(eps, dtype)
            u = _tree.safe_divide(m, root, may_be_zero)
            if decays:
                u = u + _tree.cast_scalar(weight_decay * dlr, dtype) * x.astype(dtype)
            out.append(jnp.where(skip, 0, u).astype(_tree.update_dtype(g, m)))

        new_state = ScaleByDAdaptAdamState(
            count=_tree.safe_increment(state.count),
            steps=jnp.where(skip, state.steps, _tree.safe_increment(state.steps)),
            d=jnp.where(skip, d, new_d).astype(sdtype),
            numerator=jnp.where(skip, state.numerator, numerator).astype(sdtype),
            mu=kept_on_skip(skip, mu, state.mu, treedef),
            nu=kept_on_skip(skip, nu, state.nu, treedef),
            s=kept_on_skip(skip, s, state.s, treedef),
        )
        return treedef.unflatten(out), new_state

    return GradientTransformation(init_fn, update_fn)
