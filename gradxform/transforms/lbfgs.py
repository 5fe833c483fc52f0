"""Optax's L-BFGS preconditioner, :func:`scale_by_lbfgs`, a building block to chain with a
line search (:mod:`gradxform.transforms.linesearch`).

``gradxform.lbfgs`` is torch's L-BFGS (:mod:`gradxform.transforms.torch_lbfgs`), which runs its
own inner iterations; Optax's ``optax.lbfgs`` is this preconditioner followed by a zoom line
search, one iteration per ``update``::

    chain(scale_by_lbfgs(), scale(-1.0),
          scale_by_zoom_linesearch(max_linesearch_steps=20, initial_guess_strategy="one"))
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _checks, _tree, _validate
from gradxform._base import GradientTransformation, expect_state, require_params
from gradxform._types import StepCount


class ScaleByLBFGSState(NamedTuple):
    """The state of :func:`scale_by_lbfgs`, Optax's fields.

    ``count``: updates made (int32). ``params``, ``updates``: the last params and gradients.
    ``diff_params_memory``, ``diff_updates_memory``: per leaf, ``(memory_size, *shape)``
    ring buffers of the last differences of params (``s``) and gradients (``y``), in each
    param's dtype; ``weights_memory``: their ``1 / y.s`` (0 for an empty slot).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> state = gx.scale_by_lbfgs(memory_size=3).init(jnp.zeros(2))
      >>> state.count, state.diff_params_memory.shape, state.weights_memory  # 3 slots, empty
      (Array(0, dtype=int32), (3, 2), Array([0., 0., 0.], dtype=float32))
    """

    count: StepCount
    params: Any
    updates: Any
    diff_params_memory: Any
    diff_updates_memory: Any
    weights_memory: jax.Array


def _cast(tree: Any, like: Any) -> Any:
    return jax.tree.map(lambda x, y: x.astype(y.dtype), tree, like)


def _vdot(a: Any, b: Any) -> jax.Array:
    """``Re <a, b>`` over the whole tree (``a`` conjugated)."""
    return jnp.real(_tree.tree_vdot(a, b))


def _add_scaled(a: Any, scalar: jax.Array, b: Any) -> Any:
    """``a + scalar * b`` leaf by leaf, in ``a``'s dtypes."""
    return jax.tree.map(lambda x, y: (x + scalar.astype(x.dtype) * y).astype(x.dtype), a, b)


def _precondition(updates, diff_params, diff_updates, weights, identity_scale, memory_idx):
    """``P u`` by the two-loop recursion over the memory, oldest slot at ``memory_idx``
    (Nocedal & Wright, Algorithm 7.4). Empty slots have weight 0 and change nothing."""
    size = weights.shape[0]
    order = (memory_idx + jnp.arange(size)) % size

    def backward(vec, i):
        alpha = weights[i] * _vdot(jax.tree.map(lambda m: m[i], diff_params), vec)
        return _add_scaled(vec, -alpha, jax.tree.map(lambda m: m[i], diff_updates)), alpha

    vec, alphas = jax.lax.scan(backward, updates, order, reverse=True)
    vec = jax.tree.map(lambda v: (identity_scale.astype(v.dtype) * v).astype(v.dtype), vec)

    def forward(vec, i_alpha):
        i, alpha = i_alpha
        beta = weights[i] * _vdot(jax.tree.map(lambda m: m[i], diff_updates), vec)
        return _add_scaled(vec, alpha - beta, jax.tree.map(lambda m: m[i], diff_params)), None

    return jax.lax.scan(forward, vec, (order, alphas))[0]


def scale_by_lbfgs(
    memory_size: int = 10, scale_init_precond: bool = True
) -> GradientTransformation:
    """Optax's L-BFGS preconditioner (Liu & Nocedal, 1989): ``u <- P_k u``.

    With ``s_j = w_{j+1} - w_j`` and ``y_j = u_{j+1} - u_j`` the last ``memory_size``
    differences of params and gradients, and ``rho_j = 1 / y_j.s_j``::

        P_k = V^T_{k-1} P_{k-1} V_{k-1} + rho_{k-1} s_{k-1} s_{k-1}^T,  V_j = I - rho_j y_j s_j^T
        P_{k-m} = gamma_k I,  gamma_k = s_{k-1}.y_{k-1} / y_{k-1}.y_{k-1}   (scale_init_precond)

    and at the first step ``gamma_0 = min(1, 1 / |u_0|)``. The result is the direction only
    (a descent direction once negated): chain a line search after it, as ``optax.lbfgs``
    does (see :mod:`gradxform.transforms.lbfgs`). Numbers as ``optax.scale_by_lbfgs``.

    Args:
      memory_size: how many differences to keep (>= 1).
      scale_init_precond: start from ``gamma_k I`` (else from ``I``).

    Returns:
      A transformation whose state is :class:`ScaleByLBFGSState`.

    Example:
      Optax's ``optax.lbfgs``, in Optax's loop:

      >>> import jax.numpy as jnp, gradxform as gx
      >>> def f(x):
      ...     return jnp.sum((x - jnp.arange(3.0)) ** 2)
      >>> opt = gx.chain(gx.scale_by_lbfgs(), gx.scale(-1.0),
      ...                gx.scale_by_zoom_linesearch(20, initial_guess_strategy="one"))
      >>> params, value_and_grad = jnp.zeros(3), gx.value_and_grad_from_state(f)
      >>> state = opt.init(params)
      >>> for _ in range(2):
      ...     value, grad = value_and_grad(params, state=state)
      ...     updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=f)
      ...     params = gx.apply_updates(params, updates)
      >>> [round(float(x), 5) for x in params]
      [0.0, 1.0, 2.0]

    References:
      Nocedal & Wright, *Numerical Optimization*, 1999, Algorithms 7.4 and 7.5.
      Liu & Nocedal, *On the limited memory BFGS method for large scale optimization*, 1989.
    """
    who = "scale_by_lbfgs"
    _validate.count(who, "memory_size", memory_size)
    _validate.boolean(who, "scale_init_precond", scale_init_precond)

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        memory = jax.tree.map(lambda p: jnp.zeros((memory_size, *jnp.shape(p)), p.dtype), params)
        return ScaleByLBFGSState(
            count=jnp.zeros([], jnp.int32),
            params=_tree.tree_zeros_like(params),
            updates=_tree.tree_zeros_like(params),
            diff_params_memory=memory,
            diff_updates_memory=jax.tree.map(jnp.copy, memory),
            weights_memory=jnp.zeros([memory_size], _tree.default_float_dtype()),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        expect_state(who, state, ScaleByLBFGSState)
        require_params(who, params, "its memory holds differences of params.")
        _checks.check_updates(who, updates, state.params, "stored params")
        count = state.count
        memory_idx = count % memory_size
        started = count > 0

        def compute(tree):
            return jax.tree.map(lambda x: x.astype(_tree.compute_dtype(x.dtype)), tree)

        g = compute(updates)
        diff_params = jax.tree.map(lambda p, q: p - q, compute(params), compute(state.params))
        diff_updates = jax.tree.map(lambda u, q: u - q, g, compute(state.updates))
        curvature = _vdot(diff_updates, diff_params)
        weight = jnp.where(curvature == 0.0, 0.0, 1.0 / curvature)
        # Nothing to difference at the first step: the slot stays empty.
        diff_params, diff_updates, weight = jax.tree.map(
            lambda x: jnp.where(started, x, jnp.zeros_like(x)),
            (diff_params, diff_updates, weight),
        )
        slot = (count - 1) % memory_size
        diff_params_memory, diff_updates_memory = jax.tree.map(
            lambda m, d: m.at[slot].set(d.astype(m.dtype)),
            (state.diff_params_memory, state.diff_updates_memory),
            (diff_params, diff_updates),
        )
        weights = state.weights_memory.at[slot].set(weight.astype(state.weights_memory.dtype))
        if scale_init_precond:
            squared = _tree.tree_squared_norm(diff_updates)
            scale = jnp.where(squared > 0.0, curvature / squared, 1.0)
            first_scale = jnp.minimum(1.0, 1.0 / _tree.tree_global_norm(g))
            identity_scale = jnp.where(started, scale, first_scale)
        else:
            identity_scale = jnp.ones([], _tree.default_float_dtype())
        direction = _precondition(
            g,
            _cast(compute(diff_params_memory), g),
            _cast(compute(diff_updates_memory), g),
            weights,
            identity_scale,
            memory_idx,
        )
        direction = jax.tree.map(lambda d, u: d.astype(_tree.update_dtype(u)), direction, updates)
        new_state = ScaleByLBFGSState(
            count=_tree.safe_increment(count),
            params=jax.tree.map(lambda p: jnp.array(p, copy=True), params),
            updates=_cast(updates, state.updates),
            diff_params_memory=diff_params_memory,
            diff_updates_memory=diff_updates_memory,
            weights_memory=weights,
        )
        return direction, new_state

    return GradientTransformation(init_fn, update_fn)
