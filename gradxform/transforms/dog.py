"""Distance over gradients: step sizes from how far the params have moved, as Optax computes
them. Layer-wise DoG (``scale_by_distance_over_gradients``), DoG over the whole tree
(``scale_by_dog``) and DoWG (``scale_by_dowg``).

Each keeps a copy of the initial params (never an alias of them, so that buffer donation works)
and a few scalars, kept in the widest param dtype (at least float32).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _checks, _tree, _validate
from gradxform._base import GradientTransformation, expect_state, require_params

INIT_STEP_KINDS = ("distance", "learning_rate", "heuristic")


class ScaleByDistanceOverGradientsState(NamedTuple):
    """Per leaf: ``max_dist`` (the largest distance from the start), ``grad_sum_of_squares``
    (both scalars), and ``init_params``, the starting params in ``param_dtype``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx, params = gx.scale_by_distance_over_gradients(reps_rel=0.5), {"w": jnp.zeros(2)}
      >>> _, state = tx.update({"w": jnp.array([3.0, 4.0])}, tx.init(params), params)
      >>> state.max_dist, state.grad_sum_of_squares  # r_0 = 0.5 (1 + 0), G = ||g||^2
      ({'w': Array(0.5, dtype=float32)}, {'w': Array(25., dtype=float32)})
    """

    max_dist: Any
    grad_sum_of_squares: Any
    init_params: Any


class DoGState(NamedTuple):
    """``is_init_step`` (int32: 1 until the first update, then 0; Optax's is a bool, and
    gradxform's scalar state is int32 or floating point), ``init_params``, and the scalars
    ``max_dist`` and ``sum_sq_norm_grads`` over the whole tree.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx, params = gx.scale_by_dog(("distance", 0.5)), jnp.zeros(2)
      >>> _, state = tx.update(jnp.array([3.0, 4.0]), tx.init(params), params)
      >>> state.is_init_step, state.max_dist, state.sum_sq_norm_grads  # r_1 = 0.5, G_1 = 25
      (Array(0, dtype=int32), Array(0.5, dtype=float32), Array(25., dtype=float32))
    """

    is_init_step: jax.Array
    init_params: Any
    max_dist: jax.Array
    sum_sq_norm_grads: jax.Array


class DoWGState(NamedTuple):
    """``init_params``, and the scalars ``weighted_sq_norm_grads`` and ``estim_sq_dist``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx, params = gx.scale_by_dowg(0.25), jnp.zeros(2)
      >>> _, state = tx.update(jnp.array([3.0, 4.0]), tx.init(params), params)
      >>> state.estim_sq_dist, state.weighted_sq_norm_grads  # d^2 = 0.25, v = d^2 ||g||^2
      (Array(0.25, dtype=float32), Array(6.25, dtype=float32))
    """

    init_params: Any
    weighted_sq_norm_grads: jax.Array
    estim_sq_dist: jax.Array


def copy_params(params: Any, dtype: Any | None = None) -> Any:
    """A copy of ``params`` (in ``dtype``, or each leaf's own) that never aliases them."""
    return jax.tree.map(
        lambda x: jnp.array(x, dtype=dtype or jnp.result_type(x), copy=True), params
    )


def scalar_dtype(params: Any) -> Any:
    """The dtype of scalar statistics of a tree: its widest leaf dtype, at least float32."""
    dtypes = [_tree.real_dtype(jnp.result_type(x)) for x in jax.tree.leaves(params)]
    return _tree.compute_dtype(*dtypes)


def _leaf_norm(x: jax.Array, dtype: Any) -> jax.Array:
    return jnp.sqrt(jnp.sum(_tree.abs_sq(x.astype(dtype))))


def scale_by_distance_over_gradients(
    reps_rel: float = 1e-6,
    eps: float = 1e-8,
    param_dtype: Any = jnp.float32,
    global_scale: float = 1.0,
) -> GradientTransformation:
    """Layer-wise DoG (Ivgi et al., 2023): each leaf its own distance-over-gradients step.

    For each leaf ``x`` with start ``x_0``::

        r_t = max(r_{t-1}, ||x_t - x_0||),      r_0 = reps_rel * (1 + ||x_0||)
        G_t = G_{t-1} + ||g_t||^2
        u_t = global_scale * r_t / sqrt(G_t + eps) * g_t

    As ``optax.scale_by_distance_over_gradients``, except that the per-leaf statistics are
    scalars of shape ``()`` (Optax's ``grad_sum_of_squares`` has shape ``(1,)``, which
    broadcasts the update of a scalar param to shape ``(1,)``).

    Args:
      reps_rel: the relative initial distance ``r_0 / (1 + ||x_0||)`` (>= 0); the authors
        recommend 1e-6, or 1e-4 for models with batch norm.
      eps: added to the sum of squared gradient norms (>= 0).
      param_dtype: the dtype of the stored initial params.
      global_scale: a factor of every update (1, or -1 to include the descent sign).

    Returns:
      A transformation whose state is :class:`ScaleByDistanceOverGradientsState`; it needs
      ``params``. Ivgi, Hinder & Carmon, "DoG is SGD's Best Friend: A Parameter-Free Dynamic
      Step Size Schedule", ICML 2023.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx, params = gx.scale_by_distance_over_gradients(reps_rel=0.5), {"w": jnp.zeros(2)}
      >>> u, _ = tx.update({"w": jnp.array([3.0, 4.0])}, tx.init(params), params)
      >>> u["w"]  # r_0 / ||g|| * g = 0.5 / 5 * g
      Array([0.3, 0.4], dtype=float32)
    """
    who = "scale_by_distance_over_gradients"
    _validate.non_negative(who, "reps_rel", reps_rel)
    _validate.non_negative(who, "eps", eps)
    _validate.dtype(who, "param_dtype", param_dtype)
    _validate.finite(who, "global_scale", global_scale)

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)

        def max_dist(x):
            dtype = _tree.compute_dtype(_tree.real_dtype(jnp.result_type(x)))
            return (_tree.cast_scalar(reps_rel, dtype) * (1 + _leaf_norm(x, dtype))).astype(dtype)

        def zero(x):
            return jnp.zeros([], _tree.compute_dtype(_tree.real_dtype(jnp.result_type(x))))

        return ScaleByDistanceOverGradientsState(
            max_dist=jax.tree.map(max_dist, params),
            grad_sum_of_squares=jax.tree.map(zero, params),
            init_params=copy_params(params, param_dtype),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        expect_state(who, state, ScaleByDistanceOverGradientsState)
        require_params(who, params, "the step size is the distance the params have moved")
        _checks.check_updates(who, updates, params, "param")

        def leaf(g, x, x0, d, sos):
            dtype = _tree.compute_dtype(g.dtype, x.dtype, x0.dtype, d.dtype)
            new_d = jnp.maximum(d, _leaf_norm(x.astype(dtype) - x0.astype(dtype), d.dtype))
            new_sos = sos + jnp.sum(_tree.abs_sq(g.astype(sos.dtype)))
            eta = _tree.cast_scalar(global_scale, dtype) * (
                new_d / jnp.sqrt(new_sos + _tree.cast_scalar(eps, sos.dtype))
            )
            u = eta.astype(dtype) * g.astype(dtype)
            return u.astype(_tree.update_dtype(g)), new_d, new_sos

        u, max_dist, sos = _tree.tree_map_multi(
            leaf,
            3,
            updates,
            params,
            state.init_params,
            state.max_dist,
            state.grad_sum_of_squares,
        )
        return u, ScaleByDistanceOverGradientsState(max_dist, sos, state.init_params)

    return GradientTransformation(init_fn, update_fn)


def check_init_step(who: str, init_step: Any) -> None:
    """DoG's ``init_step``: a pair ``(kind, value)``, the kind one of ``INIT_STEP_KINDS`` and the
    value a number >= 0."""
    if not isinstance(init_step, tuple | list) or len(init_step) != 2:
        raise TypeError(
            f"{who}: `init_step` must be a pair (kind, value) with kind one of "
            f"{INIT_STEP_KINDS}, got {init_step!r}"
        )
    if not isinstance(init_step[0], str) or init_step[0] not in INIT_STEP_KINDS:
        raise ValueError(
            f"{who}: `init_step` must be a pair (kind, value) with kind one of "
            f"{INIT_STEP_KINDS}, got {tuple(init_step)!r}"
        )
    try:
        _validate.non_negative(who, "value", init_step[1])
    except (TypeError, ValueError) as error:
        reason = str(error).removeprefix(f"{who}: ")
        raise type(error)(f"{who}: `init_step` = {init_step!r}: {reason}") from None


def scale_by_dog(init_step: tuple[str, Any], *, eps: float = 1e-8) -> GradientTransformation:
    """DoG's step size (Ivgi et al., 2023), over the whole tree, as Optax's ``dog`` uses it.

    ::

        r_t = max(r_{t-1}, ||x_t - x_0||)
        G_t = G_{t-1} + ||g_t||^2
        u_t = r_t / sqrt(G_t + eps) * g_t

    ``init_step = (kind, value)`` sets the start: ``("distance", r)`` gives ``r_0 = r``;
    ``("heuristic", a)`` gives ``r_0 = a * (1 + ||x_0||)``; ``("learning_rate", lr)`` gives
    ``r_0 = 0`` and a first step of ``lr * g_1``.

    Args:
      init_step: the pair ``(kind, value)`` above; ``value`` >= 0.
      eps: added to the sum of squared gradient norms (>= 0).

    Returns:
      A transformation whose state is :class:`DoGState`; it needs ``params``, and ``init``
      needs the real initial params.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx, params = gx.scale_by_dog(("distance", 0.5)), jnp.zeros(2)
      >>> tx.update(jnp.array([3.0, 4.0]), tx.init(params), params)[0]  # 0.5 / ||g|| * g
      Array([0.3, 0.4], dtype=float32)
    """
    who = "scale_by_dog"
    check_init_step(who, init_step)
    _validate.non_negative(who, "eps", eps)
    kind, value = init_step

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        dtype = scalar_dtype(params)
        if kind == "distance":
            r = jnp.asarray(value, dtype)
        elif kind == "heuristic":
            r = jnp.asarray(value, dtype) * (1 + jnp.sqrt(_tree.tree_squared_norm(params)))
        else:
            r = jnp.zeros([], dtype)
        return DoGState(
            is_init_step=jnp.ones([], jnp.int32),
            init_params=copy_params(params),
            max_dist=r.astype(dtype),
            sum_sq_norm_grads=jnp.zeros([], dtype),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        expect_state(who, state, DoGState)
        require_params(who, params, "the step size is the distance the params have moved")
        _checks.check_updates(who, updates, state.init_params, "initial param")
        dtype = state.max_dist.dtype
        moved = _tree.tree_subtract(state.init_params, params)
        dist = jnp.sqrt(_tree.tree_squared_norm(moved)).astype(dtype)
        max_dist = jnp.maximum(state.max_dist, dist)
        sum_sq = state.sum_sq_norm_grads + _tree.tree_squared_norm(updates).astype(dtype)
        rate = max_dist / jnp.sqrt(sum_sq + _tree.cast_scalar(eps, dtype))
        if kind == "learning_rate":
            rate = jnp.where(state.is_init_step != 0, _tree.cast_scalar(value, dtype), rate)
        new_updates = jax.tree.map(
            lambda g: (rate * g.astype(_tree.update_dtype(g))).astype(_tree.update_dtype(g)),
            updates,
        )
        return new_updates, DoGState(jnp.zeros([], jnp.int32), state.init_params, max_dist, sum_sq)

    return GradientTransformation(init_fn, update_fn)


def scale_by_dowg(
    init_estim_sq_dist: float | None = None, *, eps: float = 1e-4
) -> GradientTransformation:
    """DoWG's step size (Khaled et al., 2023): distance over weighted gradients.

    ::

        d_t^2 = max(d_{t-1}^2, ||x_t - x_0||^2)
        v_t = v_{t-1} + d_t^2 * ||g_t||^2
        u_t = d_t^2 / (sqrt(v_t) + eps) * g_t

    Args:
      init_estim_sq_dist: the initial estimate ``d_0^2`` of the squared distance to a
        solution (>= 0); ``None`` takes ``eps``.
      eps: added to the denominator (>= 0).

    Returns:
      A transformation whose state is :class:`DoWGState`; it needs ``params``. Khaled,
      Mishchenko & Jin, "DoWG Unleashed: An Efficient Universal Parameter-Free Gradient
      Descent Method", NeurIPS 2023.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx, params = gx.scale_by_dowg(0.25), jnp.zeros(2)
      >>> u, _ = tx.update(jnp.array([3.0, 4.0]), tx.init(params), params)
      >>> [round(float(x), 4) for x in u]  # d^2 / (d ||g|| + eps) * g = 0.25 / 2.5001 * g
      [0.3, 0.4]
    """
    who = "scale_by_dowg"
    if init_estim_sq_dist is not None:
        _validate.non_negative(who, "init_estim_sq_dist", init_estim_sq_dist)
    _validate.non_negative(who, "eps", eps)
    start = eps if init_estim_sq_dist is None else init_estim_sq_dist

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        dtype = scalar_dtype(params)
        return DoWGState(
            init_params=copy_params(params),
            weighted_sq_norm_grads=jnp.zeros([], dtype),
            estim_sq_dist=jnp.asarray(start, dtype),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        expect_state(who, state, DoWGState)
        require_params(who, params, "the step size is the distance the params have moved")
        _checks.check_updates(who, updates, state.init_params, "initial param")
        dtype = state.estim_sq_dist.dtype
        moved = _tree.tree_subtract(state.init_params, params)
        sq_dist = jnp.maximum(state.estim_sq_dist, _tree.tree_squared_norm(moved).astype(dtype))
        weighted = sq_dist * _tree.tree_squared_norm(updates).astype(dtype)
        weighted = weighted + state.weighted_sq_norm_grads
        rate = sq_dist / (jnp.sqrt(weighted) + _tree.cast_scalar(eps, dtype))
        new_updates = jax.tree.map(
            lambda g: (rate * g.astype(_tree.update_dtype(g))).astype(_tree.update_dtype(g)),
            updates,
        )
        return new_updates, DoWGState(state.init_params, weighted, sq_dist)

    return GradientTransformation(init_fn, update_fn)
