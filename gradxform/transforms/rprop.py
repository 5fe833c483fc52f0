"""Rprop's update: a step of its own size per coordinate, in the direction of the gradient's
sign, grown while the sign holds and shrunk when it flips.

torch's ``Rprop`` and Optax's ``scale_by_rprop`` differ in what they remember of the last step
and in when they clip the step sizes, which ``numerics`` selects (see :func:`scale_by_rprop`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _checks, _tree, _validate
from gradxform._base import GradientTransformation, expect_state
from gradxform._types import StepCount

NUMERICS = ("torch", "optax")


class ScaleByRpropState(NamedTuple):
    """``count`` (int32); ``step_sizes``, one per coordinate; ``prev_updates``, what is
    remembered of the last step, zeroed where the sign flipped: its gradient
    (``numerics="torch"``, torch's ``prev``) or its update (``"optax"``). Only its sign is read.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.scale_by_rprop(0.1)
      >>> _, state = tx.update(jnp.array([1.0, -1.0]), tx.init(jnp.zeros(2)))
      >>> _, state = tx.update(jnp.array([2.0, 1.0]), state)
      >>> [round(float(x), 4) for x in state.step_sizes], state.prev_updates  # 0.1 * (1.2, 0.5)
      ([0.12, 0.05], Array([2., 0.], dtype=float32))
    """

    count: StepCount
    step_sizes: Any
    prev_updates: Any


def check_eta_minus(who: str, name: str, value: Any) -> None:
    """The factor that shrinks a step after a sign flip: in (0, 1)."""
    _validate.number(who, name, value, low=0, high=1, low_open=True, high_open=True)


def check_eta_plus(who: str, name: str, value: Any) -> None:
    """The factor that grows a step while the sign holds: > 1."""
    _validate.at_least(who, name, value, 1.0, strict=True)


def _per_part(fn, g, *state):
    """``fn`` on a real leaf; on a complex one, on its real and imaginary parts apart (as torch's
    ``view_as_real``), with the state's two parts kept as one complex leaf."""
    if not jnp.iscomplexobj(g):
        return fn(g, *state)
    parts = [fn(*(take(x) for x in (g, *state))) for take in (jnp.real, jnp.imag)]
    return tuple(jax.lax.complex(re, im) for re, im in zip(*parts, strict=True))


def scale_by_rprop(
    learning_rate: float,
    eta_minus: float = 0.5,
    eta_plus: float = 1.2,
    min_step_size: float = 1e-6,
    max_step_size: float = 50.0,
    *,
    numerics: str = "torch",
) -> GradientTransformation:
    """Rprop's update (Riedmiller & Braun, 1993, in its iRprop- form, Igel & Huesken, 2000);
    by default torch's numbers.

    Per coordinate, with ``s = sign(g_t * q_{t-1})`` (``q`` what is remembered of the last
    step, 0 at first) and step sizes starting at ``learning_rate``::

        eta = eta_plus if s > 0, eta_minus if s < 0, 1 if s == 0
        d_t = clip(eta * d_{t-1}, min_step_size, max_step_size)
        u_t = 0 if s < 0 (the step is skipped), else d_t * sign(g_t)

    ``numerics="torch"`` (the default, ``torch.optim.Rprop``'s direction): ``q_t = g_t``, zeroed
    where ``s < 0``, so the step after a skipped one neither grows nor shrinks.
    ``numerics="optax"``: ``q_t = u_t``, and where ``s == 0`` the step size is left as it is,
    not clipped (the two differ only when ``learning_rate`` is outside the clipping range, or
    where a step size is 0). ``optax.scale_by_rprop`` 0.2.8 then returns the previous step's
    ``u_{t-1}`` (zeroed where ``s < 0``) instead of ``u_t``, a step late (google-deepmind/optax
    pull request 1725); here ``u_t`` is returned, the update its state holds.

    The update is to be negated (``scale(-1)``), as in :func:`gradxform.rprop`; the learning
    rate only sets the initial step sizes. Complex leaves are two real numbers each (torch's
    rule), with both parts' step sizes starting at ``learning_rate``.

    Args:
      learning_rate: the initial step size (>= 0).
      eta_minus: the factor that shrinks a step after a sign flip, in (0, 1).
      eta_plus: the factor that grows a step while the sign holds, > 1.
      min_step_size: the smallest step size (>= 0).
      max_step_size: the largest step size (>= ``min_step_size``).
      numerics: ``"torch"`` or ``"optax"``: whose arithmetic, where they differ.

    Returns:
      A transformation whose state is :class:`ScaleByRpropState`.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.scale_by_rprop(0.1)
      >>> u1, state = tx.update(jnp.array([1.0, -1.0]), tx.init(jnp.zeros(2)))
      >>> u2, state = tx.update(jnp.array([2.0, 1.0]), state)  # the second sign flips: no step
      >>> u1, [round(float(x), 4) for x in u2]  # 0.1 sign(g), then 0.1 * 1.2 and 0
      (Array([ 0.1, -0.1], dtype=float32), [0.12, 0.0])
    """
    who = "scale_by_rprop"
    _validate.non_negative(who, "learning_rate", learning_rate)
    check_eta_minus(who, "eta_minus", eta_minus)
    check_eta_plus(who, "eta_plus", eta_plus)
    _validate.non_negative(who, "min_step_size", min_step_size)
    smallest = float(min_step_size) if _validate.is_static_number(min_step_size) else 0.0
    _validate.at_least(who, "max_step_size", max_step_size, smallest)
    _validate.choice(who, "numerics", numerics, NUMERICS)
    torch_numerics = numerics == "torch"

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)

        def start(x):
            # A complex leaf's two parts each start at learning_rate: lr + i lr.
            return jax.lax.complex(x.real, x.real) if jnp.iscomplexobj(x) else x

        step_sizes = jax.tree.map(start, _tree.tree_full_like(params, learning_rate))
        return ScaleByRpropState(
            jnp.zeros([], jnp.int32), step_sizes, _tree.tree_zeros_like(params)
        )

    def real_leaf(g, step, prev):
        dtype = _tree.compute_dtype(g.dtype, step.dtype, prev.dtype)
        out_dtype = _tree.update_dtype(g, step, prev)
        g, step = g.astype(dtype), step.astype(dtype)
        product = g * prev.astype(dtype)
        grow = jnp.where(
            product > 0, _tree.cast_scalar(eta_plus, dtype), _tree.cast_scalar(eta_minus, dtype)
        )
        low, high = _tree.cast_scalar(min_step_size, dtype), _tree.cast_scalar(max_step_size, dtype)
        flipped = product < 0
        if torch_numerics:
            new_step = jnp.clip(step * jnp.where(product == 0, 1, grow), low, high)
            kept = jnp.where(flipped, 0, g)
            u = jnp.sign(kept) * new_step
            remembered = kept
        else:
            new_step = jnp.where(product == 0, step, jnp.clip(step * grow, low, high))
            u = jnp.where(flipped, 0, new_step * jnp.sign(g))
            remembered = u
        return u.astype(out_dtype), new_step.astype(out_dtype), remembered.astype(prev.dtype)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        expect_state(who, state, ScaleByRpropState)
        _checks.check_updates(who, updates, state.step_sizes, "step size")

        def leaf(g, step, prev):
            u, new_step, remembered = _per_part(real_leaf, g, step, prev)
            return u, new_step.astype(step.dtype), remembered

        u, step_sizes, prev = _tree.tree_map_multi(
            leaf, 3, updates, state.step_sizes, state.prev_updates
        )
        return u, ScaleByRpropState(_tree.safe_increment(state.count), step_sizes, prev)

    return GradientTransformation(init_fn, update_fn)
