"""Optax's schedule-free wrapper: the schedule-free averaging around any base optimizer.

:func:`schedule_free` is ``optax.contrib.schedule_free`` with Optax's numbers: the base
optimizer's updates (already scaled by its learning rate) drive the iterate ``z``, and the
averaging weights read the learning-rate schedule one count ahead of the base optimizer. With it
Optax's ``schedule_free_sgd`` and ``schedule_free_adamw`` are reachable from the building blocks;
:func:`gradxform.schedule_free_sgd` and :func:`gradxform.schedule_free_adamw` follow the
authors' ``schedulefree`` package instead.
"""

from __future__ import annotations

from typing import Any

from gradxform import _validate
from gradxform._base import GradientTransformation, as_transformation, chain
from gradxform._types import ScalarOrSchedule
from gradxform.transforms.schedule_free import check_schedule_free, schedule_free_averaging


def schedule_free(
    base_optimizer: GradientTransformation,
    learning_rate: ScalarOrSchedule,
    *,
    b1: float = 0.9,
    weight_lr_power: float = 2.0,
    state_dtype: Any | None = None,
) -> GradientTransformation:
    """Schedule-free averaging around ``base_optimizer``, as ``optax.contrib.schedule_free``.

    With ``u`` the base optimizer's update (its learning rate applied), ``k`` the steps taken
    before this one and ``y`` the params::

        lr_max = max(lr_max, learning_rate(k + 1))
        w_k = lr_max^weight_lr_power,   c = w_k / sum_j w_j    (0 when the sum is 0)
        y <- y + c * (z - y) + (1 - b1 * (1 - c)) * u
        z <- z + u

    which is Optax's ``x <- (1 - c) x + c z``, ``y = b1 x + (1 - b1) z`` written without
    ``x``; :func:`gradxform.schedule_free_eval_params` gives ``x``. The base optimizer should
    have no momentum of its own. ``learning_rate`` should be the base optimizer's: read at
    ``k + 1`` while the base optimizer reads it at ``k``, a warmup reaches ``z`` one step later
    than the authors' (``schedule_free_adamw`` here: both at ``k + 1``). For example,
    Optax's ``schedule_free_adamw(lr, warmup_steps=n)`` is::

        sched = gx.warmup_constant_schedule(0.0, lr, n)
        gx.schedule_free(
            gx.chain(
                gx.scale_by_rms(b2, eps, eps_in_sqrt=False, bias_correction=True),
                gx.add_decayed_weights(weight_decay),
                gx.scale_by_learning_rate(sched),
            ),
            sched,
        )

    Args:
      base_optimizer: the transformation whose updates move ``z`` (e.g. ``gradxform.sgd(lr)``).
      learning_rate: the base optimizer's learning rate (>= 0), a number or a schedule, which
        sets the averaging weights.
      b1: the interpolation between ``z`` and the average ``x``, in (0, 1).
      weight_lr_power: the power of the largest learning rate in the averaging weights (>= 0).
      state_dtype: dtype of ``z`` (default: each param's).

    Returns:
      ``chain(base_optimizer, averaging)``; its state holds the base optimizer's state and one
      :class:`gradxform.ScheduleFreeState`. Needs ``params``.

    References:
      Defazio, Yang, Mehta, Mishchenko, Khaled, Cutkosky, "The Road Less Scheduled", 2024.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt, params = gx.schedule_free(gx.sgd(0.1), 0.1), {"w": jnp.ones(2)}
      >>> grads = {"w": jnp.array([0.5, -4.0])}
      >>> updates, state = opt.update(grads, opt.init(params), params)
      >>> [round(u, 4) for u in updates["w"].tolist()]  # c = 1: -lr * g
      [-0.05, 0.4]
      >>> updates, state = opt.update(grads, state, gx.apply_updates(params, updates))
      >>> [round(u, 4) for u in updates["w"].tolist()]  # c = 1/2, z = y: (b1 / 2 - 1) * lr * g
      [-0.0275, 0.22]
    """
    who = "schedule_free"
    base_optimizer = as_transformation(base_optimizer, f"{who}: `base_optimizer`")
    check_schedule_free(who, learning_rate, 0, b1, weight_lr_power, 0.0)
    _validate.dtype(who, "state_dtype", state_dtype)
    averaging = schedule_free_averaging(
        who, learning_rate, 0, b1, weight_lr_power, 0.0, scaled=True, z_dtype=state_dtype
    )
    return chain(base_optimizer, averaging)
