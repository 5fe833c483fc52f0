"""The anneal to a constant value of stochastic weight averaging: ``swalr_schedule`` (torch's
``swa_utils.SWALR``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from gradxform import _validate
from gradxform._types import Schedule
from gradxform.schedules._common import broadcast, floating, interpolate, steps
from gradxform.schedules._counts import as_count, to_float, until

__all__ = ["swalr_schedule"]


def swalr_schedule(
    init_value: ArrayLike,
    *,
    swa_lr: ArrayLike,
    anneal_steps: int = 10,
    anneal_strategy: str = "cos",
) -> Schedule:
    """From ``init_value`` to ``swa_lr`` over ``anneal_steps``, then ``swa_lr``: torch's ``SWALR``.

    With ``t = min(k, anneal_steps) / anneal_steps``::

        a(t) = (1 - cos(pi * t)) / 2     ("cos"),   a(t) = t     ("linear")
        s(k) = swa_lr * a(t) + init_value * (1 - a(t))

    and ``s(k) = swa_lr`` for every ``k`` when ``anneal_steps = 0``. torch's ``SWALR`` gets
    there by recursion: each ``step()`` recovers the starting learning rate from the current
    one, ``(lr - a_prev * swa_lr) / (1 - a_prev)``, and mixes it with ``swa_lr`` by the new
    ``a``; its values are this closed form up to that recursion's rounding. (With
    ``anneal_epochs=0`` torch takes ``t = 1`` from construction on.) The cosine weights are
    computed as ``sin^2``, which keeps their relative precision at both ends.

    ``SWALR(optimizer, swa_lr, anneal_epochs, anneal_strategy)`` on an optimizer whose learning
    rate is ``lr`` when it is built is ``swalr_schedule(lr, swa_lr=swa_lr,
    anneal_steps=anneal_epochs, anneal_strategy=anneal_strategy)``; to switch to it at step
    ``s`` of another schedule, as torch's SWA recipe does, use :func:`gradxform.join_schedules`
    with ``init_value`` the other schedule's value there. Optax has no schedule of this name, so
    every argument after ``init_value`` is keyword-only.

    Args:
      init_value: the value at ``k = 0`` (the learning rate when ``SWALR`` is built).
      swa_lr: the value reached at ``k = anneal_steps`` and held after.
      anneal_steps: the length of the anneal (a whole number in [0, 2**53]).
      anneal_strategy: ``"cos"`` or ``"linear"``.

    Returns:
      The schedule.

    Example:
      >>> import gradxform as gx
      >>> sched = gx.swalr_schedule(1.0, swa_lr=0.2, anneal_steps=4, anneal_strategy="linear")
      >>> [round(float(sched(k)), 4) for k in range(6)]
      [1.0, 0.8, 0.6, 0.4, 0.2, 0.2]
    """
    who = "swalr_schedule"
    _validate.finite(who, "init_value", init_value)
    _validate.finite(who, "swa_lr", swa_lr)
    anneal_steps = steps(who, "anneal_steps", anneal_steps, minimum=0)
    _validate.choice(who, "anneal_strategy", anneal_strategy, ("cos", "linear"))
    cosine = anneal_strategy == "cos"

    def schedule(count: ArrayLike) -> jax.Array:
        k = as_count(count)
        if anneal_steps == 0:
            return broadcast(swa_lr, k)
        length = float(anneal_steps)
        remaining = jnp.clip(until(anneal_steps, k), 0, length)
        done = jnp.minimum(to_float(k), length)
        return interpolate(
            floating(init_value), floating(swa_lr), done / length, remaining / length, cosine
        )

    return schedule
