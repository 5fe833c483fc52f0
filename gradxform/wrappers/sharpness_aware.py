"""Sharpness-aware minimisation (SAM), with Optax's numbers, and ``normalize``, the step that
SAM's adversarial optimizer usually takes.

:func:`sam` alternates adversarial steps (ascent, by ``adv_optimizer``) with an outer step (by
``optimizer``) taken from where the adversarial steps started with the gradient found at their
end. In its default ("transparent") mode each call of ``update`` is one of those steps and the
caller computes the gradient at whatever params it is given; in ``opaque_mode`` one ``update``
does all of them, calling ``grad_fn=`` for the adversarial gradients.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _checks, _tree, _validate
from gradxform._base import (
    EmptyState,
    GradientTransformation,
    apply_updates,
    as_transformation,
    expect_state,
    require_params,
)
from gradxform.transforms.dog import copy_params

NormalizeState = EmptyState


class SAMState(NamedTuple):
    """``steps_since_sync`` (int32), the outer ``opt_state``, the ``adv_state``, and ``cache``:
    the params where the adversarial steps started (``None`` in opaque mode).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt = gx.sam(gx.sgd(0.1), gx.chain(gx.normalize(), gx.scale(0.05)))
      >>> state = opt.init(jnp.zeros(2))
      >>> type(state).__name__, int(state.steps_since_sync)
      ('SAMState', 0)
    """

    steps_since_sync: jax.Array
    opt_state: Any
    adv_state: Any
    cache: Any


def normalize() -> GradientTransformation:
    """Scales the updates to unit global norm: ``u <- u / ||u||``.

    As ``optax.contrib.normalize``, except that a zero gradient gives a zero update (Optax's
    gives NaN).

    Returns:
      A stateless transformation (its state is :data:`NormalizeState`, an empty state).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt = gx.normalize()
      >>> u, _ = opt.update(jnp.array([3.0, 4.0]), opt.init(jnp.zeros(2)))
      >>> [round(x, 4) for x in u.tolist()]  # u / ||u||
      [0.6, 0.8]
    """
    who = "normalize"

    def init_fn(params):
        del params
        return NormalizeState()

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        _checks.check_against_params(who, updates, params)
        norm = jnp.sqrt(_tree.tree_squared_norm(updates))

        def leaf(g):
            dtype = _tree.update_dtype(jnp.asarray(g, _tree.compute_dtype(g.dtype)))
            return _tree.safe_divide(g.astype(dtype), norm.astype(dtype), True).astype(dtype)

        return jax.tree.map(leaf, updates), state

    return GradientTransformation(init_fn, update_fn)


def _pick(condition: jax.Array, if_true: Any, if_false: Any) -> Any:
    return jax.tree.map(lambda a, b: jnp.where(condition, a, b).astype(b.dtype), if_true, if_false)


def sam(
    optimizer: GradientTransformation,
    adv_optimizer: GradientTransformation,
    sync_period: int = 2,
    reset_state: bool = True,
    opaque_mode: bool = False,
    batch_axis_name: Any | None = None,
) -> GradientTransformation:
    """Sharpness-aware minimisation (Foret et al., 2021), as ``optax.contrib.sam``.

    With ``k = sync_period``, every cycle of ``k`` steps from params ``x``::

        x^0 = x;   x^{i+1} = x^i - adv_optimizer(g(x^i))    for i < k - 1   (ascent when the
                                                              adversarial step is a descent step)
        x <- x + optimizer(g(x^{k-1}))                        (the outer step, taken from x)

    Transparent mode (the default): each ``update`` is one step of the cycle; the first
    ``k - 1`` return the adversarial moves, the last one returns the move from the current
    params to ``x + optimizer(g)``. With ``reset_state`` the adversarial state is reset after
    each cycle. In ``opaque_mode`` one ``update`` runs the whole cycle, calling the extra
    argument ``grad_fn(params, i)`` for the ``k - 1`` adversarial gradients (averaged over
    ``batch_axis_name`` when given), and returns the outer update.

    The adversarial step is typically ``chain(normalize(), sgd(rho))``, a descent step of length
    ``rho``: SAM negates ``adv_optimizer``'s updates, so the params move ``+rho g / |g|``, up the
    loss (as Optax's; ``scale(rho)`` in its place would descend).

    Args:
      optimizer: the outer transformation.
      adv_optimizer: the adversarial transformation.
      sync_period: ``k``, the steps per cycle (a whole number >= 1).
      reset_state: reset ``adv_optimizer``'s state after each cycle.
      opaque_mode: run the whole cycle in one ``update`` (needs ``grad_fn=``).
      batch_axis_name: a mapped axis over which the adversarial gradients are averaged
        (opaque mode).

    Returns:
      A transformation whose state is :class:`SAMState`; it needs ``params``. Foret et al.,
      "Sharpness-Aware Minimization for Efficiently Improving Generalization", ICLR 2021.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt = gx.sam(gx.sgd(0.1), gx.chain(gx.normalize(), gx.sgd(0.05)))
      >>> params = jnp.zeros(2)
      >>> u, state = opt.update(jnp.array([3.0, 4.0]), opt.init(params), params)
      >>> [round(x, 4) for x in u.tolist()]  # -adv_optimizer(g) = 0.05 g / |g|: ascent
      [0.03, 0.04]
      >>> params = params + u
      >>> u, state = opt.update(jnp.array([1.0, 1.0]), state, params)
      >>> [round(x, 4) for x in (params + u).tolist()]  # back to x, then -0.1 * g(x_adv)
      [-0.1, -0.1]
    """
    who = "sam"
    optimizer = as_transformation(optimizer, f"{who}: `optimizer`")
    adv_optimizer = as_transformation(adv_optimizer, f"{who}: `adv_optimizer`")
    _validate.count(who, "sync_period", sync_period)
    _validate.boolean(who, "reset_state", reset_state)
    _validate.boolean(who, "opaque_mode", opaque_mode)
    _validate.axis_name(who, batch_axis_name)

    def init_fn(params):
        return SAMState(
            steps_since_sync=jnp.zeros([], jnp.int32),
            opt_state=optimizer.init(params),
            adv_state=adv_optimizer.init(params),
            cache=None if opaque_mode else copy_params(params),
        )

    def negated(tree):
        return jax.tree.map(lambda x: -x, tree)

    def transparent_update_fn(
        updates, state, params=None, *, grad_fn: Callable | None = None, **extra_args
    ):
        del grad_fn, extra_args
        expect_state(who, state, SAMState)
        require_params(who, params, "SAM returns to the params where a cycle started")
        _checks.check_updates(who, updates, state.cache, "cached param")
        first_step = state.steps_since_sync == 0
        last_step = state.steps_since_sync == sync_period - 1
        adv_updates, adv_state = adv_optimizer.update(updates, state.adv_state, params)
        adv_updates = negated(adv_updates)
        opt_updates, opt_state = optimizer.update(updates, state.opt_state, state.cache)
        opt_updates = jax.tree.map(lambda c, p, u: c - p + u, state.cache, params, opt_updates)
        cache = _pick(first_step, params, state.cache)
        new_updates = jax.tree.map(
            lambda a, b: jnp.where(last_step, a, b), opt_updates, adv_updates
        )
        if reset_state:
            adv_state = _pick(last_step, adv_optimizer.init(params), adv_state)
        else:
            adv_state = _pick(last_step, state.adv_state, adv_state)
        opt_state = _pick(last_step, opt_state, state.opt_state)
        steps = (state.steps_since_sync + 1) % sync_period
        return new_updates, SAMState(steps.astype(jnp.int32), opt_state, adv_state, cache)

    def opaque_update_fn(
        updates, state, params=None, *, grad_fn: Callable | None = None, **extra_args
    ):
        del extra_args
        expect_state(who, state, SAMState)
        require_params(who, params, "the adversarial steps start from the params")
        _checks.check_against_params(who, updates, params)
        if grad_fn is None:
            raise ValueError(f"{who}: `grad_fn=` must be given to `update` with opaque_mode=True")
        adv_params, adv_updates, adv_state = params, updates, state.adv_state
        for i in range(sync_period - 1):
            adv_updates, adv_state = adv_optimizer.update(adv_updates, adv_state, adv_params)
            adv_params = apply_updates(adv_params, negated(adv_updates))
            adv_updates = grad_fn(adv_params, i)
            if batch_axis_name is not None:
                adv_updates = jax.lax.pmean(adv_updates, axis_name=batch_axis_name)
        if reset_state:
            adv_state = adv_optimizer.init(params)
        new_updates, opt_state = optimizer.update(adv_updates, state.opt_state, params)
        return new_updates, SAMState(jnp.zeros([], jnp.int32), opt_state, adv_state, None)

    update_fn = opaque_update_fn if opaque_mode else transparent_update_fn
    return GradientTransformation(init_fn, update_fn)
