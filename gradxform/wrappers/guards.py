"""Guards against non-finite steps: skipping a step whose gradients, updates or new state would
hold a NaN or an infinity.

:func:`apply_if_finite` wraps an optimizer so that such a step changes nothing;
:func:`gradxform.dynamic_loss_scale` (in ``loss_scale``) builds on the same pieces.

The wrappers are branch-free: the inner update is always computed, and ``jnp.where`` keeps
either its result or the old state. A ``lax.cond`` would skip the inner work on a rejected
step, but rejected steps are rare, and a ``cond`` costs on every step: under ``vmap`` it
becomes a select of both branches anyway, and on accelerators the predicate may be read back
to the host.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _tree, _validate
from gradxform._base import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    as_transformation,
    expect_state,
    extra_args_filter,
)

Params = Any
Updates = Any


def all_finite(tree: Any, *, axis_name: str | None = None) -> jax.Array:
    """Whether every element of every leaf is finite (no NaN, no +-inf), as a bool scalar.

    Args:
      tree: a tree of arrays; an empty tree is finite.
      axis_name: a mapped axis (``pmap`` or ``shard_map``) over which the answer is combined,
        so that it is the same on every device even when each holds different values.

    Returns:
      A bool array of shape ``()``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tree = {"a": jnp.ones(2), "b": jnp.array([1.0, jnp.nan])}
      >>> bool(gx.all_finite(tree)), bool(gx.all_finite({}))
      (False, True)
    """
    _validate.axis_name("all_finite", axis_name)
    finite = jnp.array(True)
    for leaf in jax.tree.leaves(tree):
        finite = finite & jnp.all(jnp.isfinite(leaf))
    if axis_name is not None:
        # One device with a non-finite value makes the step non-finite everywhere.
        finite = jax.lax.psum(jnp.logical_not(finite).astype(jnp.int32), axis_name) == 0
    return finite


def became_non_finite(new: Any, old: Any) -> jax.Array:
    """Whether some floating element of ``new`` is NaN or infinite where ``old`` was finite.

    A state may hold infinities on purpose (``reduce_on_plateau`` starts its best loss at
    ``inf``): only a finite value turning non-finite poisons it. Leaves that are not floating
    point (counters, flags, PRNG keys) are passed over.
    """
    poisoned = jnp.array(False)
    for n, o in zip(jax.tree.leaves(new), jax.tree.leaves(old), strict=True):
        if jnp.issubdtype(jnp.result_type(n), jnp.inexact):
            poisoned = poisoned | jnp.any(jnp.isfinite(o) & ~jnp.isfinite(n))
    return poisoned


def keep_if(condition: jax.Array, new: Any, old: Any) -> Any:
    """``new`` where ``condition`` holds, else ``old``, leaf by leaf (both trees alike)."""
    return jax.tree.map(lambda n, o: jnp.where(condition, n, o), new, old)


def zeros_unless(condition: jax.Array, updates: Updates) -> Updates:
    return jax.tree.map(lambda u: jnp.where(condition, u, jnp.zeros_like(u)), updates)


# --- apply_if_finite --------------------------------------------------------------------------


class ApplyIfFiniteState(NamedTuple):
    """The state of :func:`apply_if_finite`.

    ``notfinite_count``: non-finite steps in a row, up to and including the last (int32);
    ``last_finite``: whether the last step was finite (bool);
    ``total_notfinite``: non-finite steps since ``init`` (int32, saturating);
    ``inner_state``: the inner optimizer's state, as of the last applied step.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> state = gx.apply_if_finite(gx.sgd(0.1), max_consecutive_errors=3).init(jnp.ones(2))
      >>> int(state.notfinite_count), bool(state.last_finite), int(state.total_notfinite)
      (0, True, 0)
    """

    notfinite_count: jax.Array
    last_finite: jax.Array
    total_notfinite: jax.Array
    inner_state: Any


def apply_if_finite(
    inner: GradientTransformation, max_consecutive_errors: int, *, axis_name: str | None = None
) -> GradientTransformation:
    """Skips steps whose gradients, updates or new state hold a NaN or an infinity.

    With ``finite_t`` true when the gradients and the inner updates of step ``t`` are finite
    and no finite value of the inner state turns non-finite (a gradient of 1e30 is finite, but
    its square overflows Adam's second moment), and ``n_t`` the number of non-finite steps in
    a row ending at ``t``::

        apply_t = finite_t or n_t > max_consecutive_errors
        u_t = inner_update_t              if apply_t else 0
        s_t = inner_state_t               if apply_t else s_{t-1}

    A skipped step returns zero updates (the params do not move) and leaves the inner state
    exactly as it was, so one bad batch costs one step and nothing else. After more than
    ``max_consecutive_errors`` non-finite steps in a row the non-finite update is let through,
    so that a run which has truly diverged shows it in its params instead of silently
    standing still. The counters in :class:`ApplyIfFiniteState` report what happened.

    Args:
      inner: the optimizer to guard.
      max_consecutive_errors: how many non-finite steps in a row are skipped (>= 0).
      axis_name: a mapped axis (``pmap``/``shard_map``) over which the finiteness test is
        combined, so that every device skips the same steps when each holds a different shard
        of the gradients.

    Returns:
      A transformation whose state is :class:`ApplyIfFiniteState`.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt = gx.apply_if_finite(gx.sgd(0.1), max_consecutive_errors=3)
      >>> params = {"w": jnp.ones(2)}
      >>> state = opt.init(params)
      >>> updates, state = opt.update({"w": jnp.array([1.0, jnp.nan])}, state, params)
      >>> updates["w"].tolist(), int(state.notfinite_count), bool(state.last_finite)
      ([0.0, 0.0], 1, False)
    """
    who = "apply_if_finite"
    inner = as_transformation(inner, who)
    keep_extra = extra_args_filter(inner.update)
    _validate.count(
        who, "max_consecutive_errors", max_consecutive_errors, minimum=0, traced_ok=True
    )
    _validate.axis_name(who, axis_name)

    def init_fn(params):
        return ApplyIfFiniteState(
            notfinite_count=jnp.zeros([], jnp.int32),
            last_finite=jnp.array(True),
            total_notfinite=jnp.zeros([], jnp.int32),
            inner_state=inner.init(params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        expect_state(who, state, ApplyIfFiniteState)
        new_updates, new_inner = inner.update(
            updates, state.inner_state, params, **keep_extra(extra_args)
        )
        finite = all_finite((updates, new_updates)) & ~became_non_finite(
            new_inner, state.inner_state
        )
        if axis_name is not None:
            # One device with a non-finite value makes the step non-finite everywhere.
            finite = jax.lax.psum((~finite).astype(jnp.int32), axis_name) == 0
        notfinite_count = jnp.where(finite, 0, _tree.safe_increment(state.notfinite_count))
        apply = finite | (notfinite_count > max_consecutive_errors)
        total = jnp.where(
            finite, state.total_notfinite, _tree.safe_increment(state.total_notfinite)
        )
        return zeros_unless(apply, new_updates), ApplyIfFiniteState(
            notfinite_count=notfinite_count.astype(jnp.int32),
            last_finite=finite,
            total_notfinite=total.astype(jnp.int32),
            inner_state=keep_if(apply, new_inner, state.inner_state),
        )

    return GradientTransformationExtraArgs(init_fn, update_fn)
