"""Stochastic gradient descent: with momentum, as ``torch.optim.SGD``, and averaged, as
``torch.optim.ASGD``."""

from __future__ import annotations

from typing import Any

from gradxform import _validate
from gradxform._base import GradientTransformation
from gradxform._types import ScalarOrSchedule
from gradxform.optimizers._links import (
    TorchSpec,
    check_common,
    decay_link,
    optional,
    torch_optimizer,
)
from gradxform.transforms.asgd import check_asgd, scale_by_asgd
from gradxform.transforms.momentum import trace
from gradxform.transforms.scaling import scale_by_learning_rate


def sgd(
    learning_rate: ScalarOrSchedule,
    momentum: float = 0.0,
    nesterov: bool = False,
    accumulator_dtype: Any | None = None,
    *,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    maximize: bool = False,
) -> GradientTransformation:
    """Stochastic gradient descent, as ``torch.optim.SGD``.

    ::

        g <- g + weight_decay * p
        b_1 = g_1,   b_t = momentum * b_{t-1} + (1 - dampening) * g_t
        d = g + momentum * b   if nesterov   else   b        (d = g without momentum)
        p <- p - lr * d

    Args:
      learning_rate: ``lr``, a number or a schedule.
      momentum: the momentum factor (>= 0; a static 0 turns momentum off).
      nesterov: Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).
      accumulator_dtype: dtype of the momentum buffer; by default each param's dtype.
      dampening: torch's dampening of the gradient in the buffer.
      weight_decay: coupled L2 penalty.
      maximize: ascend the objective instead (torch's ``maximize``: the gradient is negated
        first).

    Returns:
      ``chain(add_l2, trace, scale_by_learning_rate)`` (parts that a static 0 switches off
      left out).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt, params = gx.sgd(0.1, momentum=0.9), {"w": jnp.ones(2)}
      >>> grads = {"w": jnp.array([0.5, -4.0])}
      >>> updates, state = opt.update(grads, opt.init(params), params)
      >>> [round(u, 4) for u in updates["w"].tolist()]  # b_1 = g: -lr * g
      [-0.05, 0.4]
      >>> updates, state = opt.update(grads, state, params)
      >>> [round(u, 4) for u in updates["w"].tolist()]  # b_2 = 0.9 * g + g: -1.9 * lr * g
      [-0.095, 0.76]
    """
    who = "sgd"
    check_common(who, learning_rate, weight_decay)
    _validate.non_negative(who, "momentum", momentum)
    _validate.boolean(who, "nesterov", nesterov)
    _validate.dtype(who, "accumulator_dtype", accumulator_dtype)
    _validate.non_negative(who, "dampening", dampening)
    no_momentum = _validate.is_static_zero(momentum)
    if nesterov and (no_momentum or _validate.is_static_nonzero(dampening)):
        raise ValueError(
            f"{who}: Nesterov momentum needs `momentum` > 0 and `dampening` = 0, got "
            f"momentum={momentum!r}, dampening={dampening!r}"
        )
    return torch_optimizer(
        who,
        *decay_link(who, weight_decay),
        *optional(
            not no_momentum,
            trace(momentum, nesterov, accumulator_dtype, dampening=dampening),
        ),
        scale_by_learning_rate(learning_rate),
        maximize=maximize,
        torch_spec=TorchSpec(
            "SGD",
            {
                "lr": learning_rate,
                "momentum": momentum,
                "dampening": dampening,
                "weight_decay": weight_decay,
                "nesterov": nesterov,
            },
        ),
    )


def asgd(
    learning_rate: float = 1e-2,
    *,
    lambd: float = 1e-4,
    alpha: float = 0.75,
    t0: float = 1e6,
    weight_decay: float = 0.0,
    maximize: bool = False,
) -> GradientTransformation:
    """Averaged SGD (Polyak & Juditsky, 1992), as ``torch.optim.ASGD``.

    With ``eta_1 = lr`` and ``mu_1 = 1``, the ``t``-th step::

        g <- g + weight_decay * p
        p <- p * (1 - lambd * eta_t) - eta_t * g
        ax <- p if mu_t == 1 else ax + mu_t * (p - ax)
        eta_{t+1} = lr / (1 + lambd * lr * t)^alpha,   mu_{t+1} = 1 / max(1, t - t0)

    The averaged params ``ax`` (for evaluation) are read with
    :func:`gradxform.asgd_averaged_params`.

    Args:
      learning_rate: ``lr``, the initial step size (a number: the schedule is ASGD's own).
      lambd: the decay of the params and of the step size (>= 0).
      alpha: the power of the step-size decay (>= 0).
      t0: the step from which the params are averaged (>= 0).
      weight_decay: coupled L2 penalty.
      maximize: ascend the objective instead (torch's ``maximize``: the gradient is negated
        first).

    Returns:
      ``chain(add_l2, scale_by_asgd)``. Needs ``params``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt, params = gx.asgd(0.1, lambd=0.5), {"w": jnp.array([1.0, -2.0])}
      >>> updates, _ = opt.update({"w": jnp.array([0.5, -4.0])}, opt.init(params), params)
      >>> [round(u, 4) for u in updates["w"].tolist()]  # -lambd * lr * p - lr * g
      [-0.1, 0.5]
    """
    who = "asgd"
    _validate.non_negative(who, "weight_decay", weight_decay)
    check_asgd(who, learning_rate, lambd, alpha, t0)
    return torch_optimizer(
        who,
        *decay_link(who, weight_decay),
        scale_by_asgd(learning_rate, lambd=lambd, alpha=alpha, t0=t0),
        maximize=maximize,
        torch_spec=TorchSpec(
            "ASGD",
            {
                "lr": learning_rate,
                "lambd": lambd,
                "alpha": alpha,
                "t0": t0,
                "weight_decay": weight_decay,
            },
        ),
    )
