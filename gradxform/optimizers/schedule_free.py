"""Schedule-free SGD and AdamW (Defazio et al., 2024), with the numbers of the authors'
``schedulefree`` package (``SGDScheduleFree``, ``AdamWScheduleFree``, in train mode).

Each is a ``chain`` ending in :func:`gradxform.scale_by_schedule_free`; the params the chain
updates are the train-mode ``y``, and :func:`gradxform.schedule_free_eval_params` gives the
eval-mode ``x``. ``optax.contrib``'s versions differ: they apply the warmup schedule one step
late (``lr_k`` uses ``k`` where the authors use ``k + 1``) and have no ``r``.
"""

from __future__ import annotations

from gradxform import _validate
from gradxform._base import GradientTransformation, chain
from gradxform._types import ScalarOrSchedule
from gradxform.optimizers._links import decay_link
from gradxform.transforms.rms import scale_by_rms
from gradxform.transforms.schedule_free import check_schedule_free, schedule_free_averaging


def schedule_free_sgd(
    learning_rate: ScalarOrSchedule,
    *,
    warmup_steps: int = 0,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
) -> GradientTransformation:
    """Schedule-free SGD, as the authors' ``schedulefree.SGDScheduleFree`` (train mode).

    With ``y`` the params, ``k`` the steps taken before this one and ``b1 = momentum``::

        g <- g + weight_decay * y                    (L2, at y)
        lr_k = learning_rate * min(1, (k + 1) / warmup_steps),  lr_max = max_j lr_j
        c = w_k / sum_j w_j,  w_j = lr_max^2 (as lr_max was at step j)
        y <- y + c * (z - y) + lr_k * (momentum * (1 - c) - 1) * g
        z <- z - lr_k * g

    The eval-mode params are ``x = y + (1 - 1 / momentum) * (z - y)``
    (:func:`gradxform.schedule_free_eval_params`).

    Args:
      learning_rate: ``lr`` (>= 0), a number or a schedule of the step count.
      warmup_steps: steps of linear warmup (0: none).
      momentum: the interpolation between ``z`` and the average ``x``, in (0, 1).
      weight_decay: L2 penalty added to the gradient at ``y`` (>= 0).

    Returns:
      ``chain(add_l2, scale_by_schedule_free)``; its state holds one
      :class:`gradxform.ScheduleFreeState`. Needs ``params``.

    References:
      Defazio et al., "The Road Less Scheduled", 2024.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt, params = gx.schedule_free_sgd(0.1), {"w": jnp.ones(2)}
      >>> grads = {"w": jnp.array([0.5, -4.0])}
      >>> updates, state = opt.update(grads, opt.init(params), params)
      >>> [round(u, 4) for u in updates["w"].tolist()]  # c = 1: y <- z = y - lr * g
      [-0.05, 0.4]
      >>> updates, state = opt.update(grads, state, gx.apply_updates(params, updates))
      >>> [round(u, 4) for u in updates["w"].tolist()]  # c = 1/2, z = y: (b1 / 2 - 1) * lr * g
      [-0.0275, 0.22]
    """
    who = "schedule_free_sgd"
    check_schedule_free(who, learning_rate, warmup_steps, momentum, 2.0, 0.0, "momentum")
    _validate.non_negative(who, "weight_decay", weight_decay)
    return chain(
        *decay_link(who, weight_decay),
        schedule_free_averaging(who, learning_rate, warmup_steps, momentum, 2.0, 0.0),
    )


def schedule_free_adamw(
    learning_rate: ScalarOrSchedule,
    *,
    warmup_steps: int = 0,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    weight_lr_power: float = 2.0,
    r: float = 0.0,
) -> GradientTransformation:
    """Schedule-free AdamW, as the authors' ``schedulefree.AdamWScheduleFree`` (train mode).

    With ``y`` the params and ``k`` the steps taken before this one (``t = k + 1``)::

        v_t = b2 * v_{t-1} + (1 - b2) * g^2
        d = g / (sqrt(v_t / (1 - b2^t)) + eps) + weight_decay * y
        lr_k = learning_rate * min(1, (k + 1) / warmup_steps),  lr_max = max_j lr_j
        w_k = (k + 1)^r * lr_max^weight_lr_power,  c = w_k / sum_j w_j
        y <- y + c * (z - y) + lr_k * (b1 * (1 - c) - 1) * d
        z <- z - lr_k * d

    The eval-mode params are ``x = y + (1 - 1 / b1) * (z - y)``
    (:func:`gradxform.schedule_free_eval_params`).

    Args:
      learning_rate: ``lr`` (>= 0), a number or a schedule of the step count.
      warmup_steps: steps of linear warmup (0: none).
      b1: the interpolation between ``z`` and the average ``x``, in (0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to the denominator outside the root (>= 0).
      weight_decay: decoupled decay, computed at ``y`` (>= 0).
      weight_lr_power: the power of the largest learning rate in the averaging weights (>= 0).
      r: the power of the step number in the averaging weights (>= 0).

    Returns:
      ``chain(scale_by_rms(bias_correction=True), add_decayed_weights,
      scale_by_schedule_free)``; its state holds one :class:`gradxform.ScheduleFreeState`.
      Needs ``params``.

    References:
      Defazio et al., "The Road Less Scheduled", 2024.

    Example:
      ``c = 1`` on the first step, so ``y <- z = y - lr * sign(g)``:

      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt, params = gx.schedule_free_adamw(0.1), {"w": jnp.array([1.0, -2.0])}
      >>> updates, _ = opt.update({"w": jnp.array([0.5, -4.0])}, opt.init(params), params)
      >>> [round(u, 4) for u in updates["w"].tolist()]
      [-0.1, 0.1]
    """
    who = "schedule_free_adamw"
    check_schedule_free(who, learning_rate, warmup_steps, b1, weight_lr_power, r)
    _validate.probability(who, "b2", b2)
    _validate.non_negative(who, "eps", eps)
    _validate.non_negative(who, "weight_decay", weight_decay)
    return chain(
        scale_by_rms(b2, eps, 0.0, eps_in_sqrt=False, bias_correction=True),
        *decay_link(who, weight_decay),
        schedule_free_averaging(who, learning_rate, warmup_steps, b1, weight_lr_power, r),
    )
