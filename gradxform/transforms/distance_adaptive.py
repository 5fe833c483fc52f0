"""Adam with an estimated step size: Prodigy (``scale_by_prodigy``), with its authors' numbers
(``prodigyopt.Prodigy``), and the parts it shares with D-Adaptation (``dadaptation.py``).

Both estimate ``d``, the distance from the initial params to a solution, from sums over the
whole tree (the reference's one param group), and both take the learning rate themselves: the
estimate depends on it (``dlr = d * lr``), and D-Adaptation's first moment accumulates
``dlr * g``. Each returns the step to subtract, learning rate included.

A step whose learning rate is 0, or whose ``sum |s|`` is 0 (no gradient yet), changes nothing,
as the references return early: updates 0, the state kept, except ``count`` (the schedule's
argument), which counts every update; ``steps`` counts the steps that moved (the reference's
``k``, of the bias correction). Scalars are kept in the widest param dtype (>= float32), the
moments, ``s`` and Prodigy's initial params in each param's dtype, as the references keep them.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _checks, _tree, _validate
from gradxform._base import GradientTransformation, expect_state, require_params
from gradxform._types import ScalarOrSchedule, StepCount
from gradxform.transforms.dog import copy_params, scalar_dtype


class ScaleByProdigyState(NamedTuple):
    """``count`` (updates made, int32), ``steps`` (steps that moved, int32), the scalars ``d``,
    ``d_max`` and ``numerator`` (the reference's ``d_numerator``), and per param ``mu`` and
    ``nu`` (Adam's moments of ``d g``), ``s`` (the weighted sum of gradients) and ``params0``
    (the initial params).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx, params = gx.scale_by_prodigy(d0=0.5), jnp.array([1.0, 2.0])
      >>> state = tx.init(params)
      >>> state.count, state.d, state.d_max, state.params0
      (Array(0, dtype=int32), Array(0.5, dtype=float32), Array(0.5, dtype=float32), Array([1., 2.],
      dtype=float32))
    """

    count: StepCount
    steps: jax.Array
    d: jax.Array
    d_max: jax.Array
    numerator: jax.Array
    mu: Any
    nu: Any
    s: Any
    params0: Any


def _growth_rate(who: str, name: str, value: Any) -> None:
    scalar = isinstance(value, jax.Array) and jnp.shape(value) == ()  # e.g. injected
    concrete = _validate.is_static_number(value) or (scalar and not _validate.is_traced(value))
    if not (concrete and float(value) == math.inf):
        _validate.at_least(who, name, value, 1.0)


def _optional_probability(who: str, name: str, value: Any) -> None:
    if value is not None:
        _validate.probability(who, name, value)


_CHECKS = {
    "learning_rate": lambda who, name, value: _validate.learning_rate(who, value, name),
    "b1": _validate.probability,
    "b2": _validate.probability,
    "beta3": _optional_probability,
    "d0": _validate.positive,
    "d_coef": _validate.positive,
    "growth_rate": _growth_rate,
    "weight_decay": _validate.non_negative,
    "eps": _validate.non_negative,
    "safeguard_warmup": _validate.boolean,
    "use_bias_correction": _validate.boolean,
}


def check_arguments(who: str, **arguments: Any) -> None:
    """The arguments of :func:`scale_by_prodigy` and :func:`scale_by_dadapt_adam` (and of
    their optimizers), named for ``who``: decays in [0, 1) (``beta3`` may be ``None``), ``d0``
    and ``d_coef`` > 0, ``growth_rate`` >= 1 or ``inf``, ``eps`` and ``weight_decay`` >= 0."""
    for name, value in arguments.items():
        _CHECKS[name](who, name, value)


def step_size(who: str, learning_rate: Any, state: Any, bias_correction: bool, b1, b2):
    """``(lr, dlr)``: the learning rate at ``state.count`` and ``dlr = d lr c``, with Adam's
    ``c = sqrt(1 - b2^(k+1)) / (1 - b1^(k+1))`` at the reference's ``k = state.steps`` (or 1)."""
    dtype = state.d.dtype
    lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
    if jnp.shape(lr) != ():
        raise ValueError(
            f"{who}: the learning-rate schedule must return a scalar, got shape "
            f"{jnp.shape(lr)}; a schedule is never broadcast against the updates"
        )
    lr = jnp.asarray(lr).astype(dtype)
    if not bias_correction:
        return lr, state.d * lr
    k = _tree.safe_increment(state.steps)
    c = jnp.sqrt(_tree.bias_correction(b2, k)) / _tree.bias_correction(b1, k)
    return lr, state.d * lr * c.astype(dtype)


def skipped_step(learning_rate: Any, lr: jax.Array, denominator: jax.Array) -> jax.Array:
    """The references' early return: no sum of |s| yet, or a learning rate of 0."""
    skip = denominator == 0
    if not _validate.is_static_nonzero(learning_rate):
        skip = skip | (lr == 0)
    return skip


def flat_leaves(tree: Any, treedef: Any) -> list:
    return treedef.flatten_up_to(tree)


def kept_on_skip(skip: jax.Array, new: list, old: Any, treedef: Any) -> Any:
    """The new leaves, or the old ones on a skipped step, each in its old dtype."""
    pairs = zip(new, flat_leaves(old, treedef), strict=True)
    return treedef.unflatten([jnp.where(skip, o, n).astype(o.dtype) for n, o in pairs])


def scale_by_prodigy(
    learning_rate: ScalarOrSchedule = 1.0,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    beta3: float | jax.Array | None = None,
    d0: float = 1e-6,
    d_coef: float = 1.0,
    growth_rate: float = math.inf,
    weight_decay: float = 0.0,
    eps: float = 1e-8,
    safeguard_warmup: bool = False,
    use_bias_correction: bool = False,
) -> GradientTransformation:
    """Prodigy's step (Mishchenko & Defazio, 2023), as ``prodigyopt.Prodigy`` (``slice_p=1``,
    ``decouple=True``), learning rate and decoupled weight decay included.

    With ``c_k = sqrt(1 - b2^(k+1)) / (1 - b1^(k+1))`` (1 without ``use_bias_correction``),
    ``dlr_k = d_k lr c_k`` and sums over every element of the tree::

        m = b1 m + (1 - b1) d_k g,        v = b2 v + (1 - b2) d_k^2 g^2
        r = beta3 r + (d_k / d0) dlr_k <g, x_0 - x>
        s = beta3 s + (d_k / d0) w_k g,   w_k = d_k if safeguard_warmup else dlr_k
        d_hat = d_coef r / sum |s|
        d' = max(d_k, d_hat) while d_k = d0, else d_k;   d_max = max(d_max, d_hat)
        d_{k+1} = min(d_max, growth_rate d')
        u = dlr_k (m / (sqrt(v) + d_{k+1} eps) + weight_decay x)
        (with b1 = 0: u = dlr_k (d_{k+1} g / (sqrt(v) + d_{k+1} eps) + weight_decay x))

    (``u`` is subtracted: :func:`gradxform.prodigy` chains ``scale(-1)``.) A step with
    ``lr = 0`` or ``sum |s| = 0`` changes nothing (see the module's docstring).

    Args:
      learning_rate: a factor of Prodigy's step size (1: its own), a number or a schedule;
        the estimate of ``d`` depends on it.
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      beta3: decay of ``r`` and ``s``, in [0, 1); ``None`` takes ``sqrt(b2)``.
      d0: the initial estimate of ``d`` (> 0).
      d_coef: a factor of every estimate ``d_hat`` (> 0).
      growth_rate: the most ``d`` may grow per step (>= 1, ``inf`` for no limit).
      weight_decay: decoupled weight decay, scaled by ``dlr_k`` (>= 0).
      eps: added to the denominator, times ``d_{k+1}`` (>= 0).
      safeguard_warmup: leave the learning rate out of ``s`` (the reference's option for
        warm-up).
      use_bias_correction: Adam's bias correction ``c_k``.

    Returns:
      A transformation whose state is :class:`ScaleByProdigyState`; it needs ``params``, and
      ``init`` needs the real initial params. Mishchenko & Defazio, "Prodigy: An Expeditiously
      Adaptive Parameter-Free Learner", ICML 2024 (arXiv:2306.06101).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx, params = gx.scale_by_prodigy(d0=0.5), jnp.zeros(2)
      >>> u, state = tx.update(jnp.array([0.5, -2.0]), tx.init(params), params)
      >>> # the first step: d0 m / sqrt(v) = d0 (1 - b1) d0 g / (sqrt(1 - b2) d0 |g|); d stays d0
      >>> [round(float(x), 4) for x in u], state.d
      ([1.5811, -1.5811], Array(0.5, dtype=float32))
    """
    who = "scale_by_prodigy"
    check_arguments(who, learning_rate=learning_rate, b1=b1, b2=b2, beta3=beta3, d0=d0)
    check_arguments(who, d_coef=d_coef, growth_rate=growth_rate, weight_decay=weight_decay, eps=eps)
    check_arguments(who, safeguard_warmup=safeguard_warmup, use_bias_correction=use_bias_correction)
    if beta3 is None:
        beta3 = math.sqrt(float(b2)) if _validate.is_static_number(b2) else jnp.sqrt(b2)
    unlimited = _validate.is_static_number(growth_rate) and float(growth_rate) == math.inf
    may_be_zero = not _validate.is_static_nonzero(eps)

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        dtype = scalar_dtype(params)
        # Two new arrays (copies of an array d0 too): leaves sharing a buffer cannot be donated.
        return ScaleByProdigyState(
            count=jnp.zeros([], jnp.int32),
            steps=jnp.zeros([], jnp.int32),
            d=jnp.array(d0, dtype),
            d_max=jnp.array(d0, dtype),
            numerator=jnp.zeros([], dtype),
            mu=_tree.tree_zeros_like(params),
            nu=_tree.tree_zeros_like(params),
            s=_tree.tree_zeros_like(params),
            params0=copy_params(params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        expect_state(who, state, ScaleByProdigyState)
        require_params(who, params, "Prodigy's estimate is the distance from the initial params")
        _checks.check_updates(who, updates, state.mu, "first moment")
        treedef = jax.tree.structure(updates)
        sdtype = state.d.dtype
        d, (lr, dlr) = state.d, step_size(who, learning_rate, state, use_bias_correction, b1, b2)
        ratio = d / _tree.cast_scalar(d0, sdtype)
        numerator_weight = ratio * dlr
        s_weight = ratio * (d if safeguard_warmup else dlr)
        delta = jnp.zeros([], sdtype)
        denominator = jnp.zeros([], sdtype)
        mu, nu, s = [], [], []
        trees = (updates, params, state.params0, state.mu, state.nu, state.s)
        for g, x, x0, m, v, s_old in zip(*(flat_leaves(x, treedef) for x in trees), strict=True):
            dtype = _tree.compute_dtype(g.dtype, m.dtype, v.dtype, s_old.dtype)
            g = g.astype(dtype)
            moved = x0.astype(dtype) - x.astype(dtype)
            dot = jnp.sum(g * moved).astype(sdtype)
            delta = delta + numerator_weight * dot
            d_g = _tree.cast_scalar(d * (1 - b1), dtype) * g
            mu.append(_tree.cast_scalar(b1, dtype) * m.astype(dtype) + d_g)
            v_weight = _tree.cast_scalar(d * d * (1 - b2), dtype)
            nu.append(_tree.cast_scalar(b2, dtype) * v.astype(dtype) + (v_weight * g) * g)
            new_s = _tree.cast_scalar(beta3, dtype) * s_old.astype(dtype)
            new_s = new_s + _tree.cast_scalar(s_weight, dtype) * g
            s.append(new_s)
            denominator = denominator + jnp.sum(jnp.abs(new_s)).astype(sdtype)

        numerator = state.numerator * _tree.cast_scalar(beta3, sdtype) + delta
        skip = skipped_step(learning_rate, lr, denominator)
        d_hat = _tree.cast_scalar(d_coef, sdtype) * numerator / jnp.where(skip, 1, denominator)
        grown = jnp.where(d == _tree.cast_scalar(d0, sdtype), jnp.maximum(d, d_hat), d)
        d_max = jnp.maximum(state.d_max, d_hat)
        new_d = d_max if unlimited else jnp.minimum(d_max, grown * growth_rate)

        out = []
        decay = None if _validate.is_static_zero(weight_decay) else weight_decay * dlr
        for g, x, m, v in zip(
            flat_leaves(updates, treedef), flat_leaves(params, treedef), mu, nu, strict=True
        ):
            dtype = m.dtype
            root = jnp.sqrt(v) + _tree.cast_scalar(new_d * eps, dtype)
            u = _tree.cast_scalar(dlr, dtype) * _tree.safe_divide(m, root, may_be_zero)
            if not _validate.is_static_nonzero(b1):  # the reference's b1 = 0 steps along d' g
                plain = _tree.safe_divide(g.astype(dtype), root, may_be_zero)
                u = jnp.where(b1 == 0, _tree.cast_scalar(dlr * new_d, dtype) * plain, u)
            if decay is not None:
                u = u + _tree.cast_scalar(decay, dtype) * x.astype(dtype)
            out.append(jnp.where(skip, 0, u).astype(_tree.update_dtype(g, m)))

        new_state = ScaleByProdigyState(
            count=_tree.safe_increment(state.count),
            steps=jnp.where(skip, state.steps, _tree.safe_increment(state.steps)),
            d=jnp.where(skip, d, new_d).astype(sdtype),
            d_max=jnp.where(skip, state.d_max, d_max).astype(sdtype),
            numerator=jnp.where(skip, state.numerator, numerator).astype(sdtype),
            mu=kept_on_skip(skip, mu, state.mu, treedef),
            nu=kept_on_skip(skip, nu, state.nu, treedef),
            s=kept_on_skip(skip, s, state.s, treedef),
            params0=state.params0,
        )
        return treedef.unflatten(out), new_state

    return GradientTransformation(init_fn, update_fn)
