"""Root-mean-square optimizers: Adagrad, RMSprop and Adadelta, as ``torch.optim``'s classes."""

from __future__ import annotations

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
from gradxform.transforms.adadelta import scale_by_adadelta
from gradxform.transforms.momentum import trace
from gradxform.transforms.rms import scale_by_rms, scale_by_rss
from gradxform.transforms.scaling import scale_by_learning_rate


def adagrad(
    learning_rate: ScalarOrSchedule = 0.01,
    initial_accumulator_value: float = 0.0,
    eps: float = 1e-10,
    *,
    lr_decay: float = 0.0,
    weight_decay: float = 0.0,
    eps_root: float = 0.0,
    maximize: bool = False,
) -> GradientTransformation:
    """Adagrad (Duchi et al., 2011), as ``torch.optim.Adagrad``.

    ::

        g <- g + weight_decay * p
        s_t = s_{t-1} + |g_t|^2,   s_0 = initial_accumulator_value
        p <- p - lr_t * g_t / (sqrt(s_t + eps_root) + eps),   lr_t = lr / (1 + (t - 1) * lr_decay)

    Args:
      learning_rate: ``lr``, a number or a schedule.
      initial_accumulator_value: the accumulator's start (>= 0).
      eps: added to the denominator (>= 0).
      lr_decay: the ``1/t`` decay of the learning rate (>= 0).
      weight_decay: coupled L2 penalty.
      eps_root: added inside the root (>= 0).
      maximize: ascend the objective instead (torch's ``maximize``: the gradient is negated
        first).

    Returns:
      ``chain(add_l2, scale_by_rss, scale_by_learning_rate)``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt, params = gx.adagrad(0.1), {"w": jnp.array([1.0, -2.0])}
      >>> updates, _ = opt.update({"w": jnp.array([0.5, -4.0])}, opt.init(params), params)
      >>> [round(u, 4) for u in updates["w"].tolist()]  # s_1 = g^2: -lr * g / |g|
      [-0.1, 0.1]
    """
    who = "adagrad"
    check_common(who, learning_rate, weight_decay)
    _validate.non_negative(who, "initial_accumulator_value", initial_accumulator_value)
    _validate.non_negative(who, "eps", eps)
    _validate.non_negative(who, "lr_decay", lr_decay)
    _validate.non_negative(who, "eps_root", eps_root)
    rate = learning_rate
    if not _validate.is_static_zero(lr_decay):

        def rate(count):
            base = learning_rate(count) if callable(learning_rate) else learning_rate
            return base / (1 + count * lr_decay)

    spec = TorchSpec(
        "Adagrad",
        {
            "lr": learning_rate,
            "lr_decay": lr_decay,
            "eps": eps,
            "weight_decay": weight_decay,
            "initial_accumulator_value": initial_accumulator_value,
        },
    )
    return torch_optimizer(
        who,
        *decay_link(who, weight_decay),
        scale_by_rss(initial_accumulator_value, eps, eps_root=eps_root),
        scale_by_learning_rate(rate),
        maximize=maximize,
        torch_spec=spec if _validate.is_static_zero(eps_root) else None,  # torch has no eps_root
    )


def rmsprop(
    learning_rate: ScalarOrSchedule = 0.01,
    decay: float = 0.99,
    eps: float = 1e-8,
    *,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    centered: bool = False,
    eps_root: float = 0.0,
    maximize: bool = False,
) -> GradientTransformation:
    """RMSProp (Hinton, 2012), as ``torch.optim.RMSprop`` (``decay`` is torch's ``alpha``).

    ::

        g <- g + weight_decay * p
        v_t = decay * v_{t-1} + (1 - decay) * |g_t|^2
        d_t = g_t / (sqrt((v_t - |c_t|^2 if centered else v_t) + eps_root) + eps)
        b_t = momentum * b_{t-1} + d_t          (b = d without momentum)
        p <- p - lr * b_t

    Optax's ``optax.rmsprop(learning_rate, decay, eps, initial_scale, eps_in_sqrt, centered,
    momentum, nesterov, bias_correction)`` (other defaults, eps inside the root, the momentum
    after the learning rate) is, with Optax's numbers (``tests/test_optax_options.py``)::

        chain(
            scale_by_rms(decay, eps, initial_scale, eps_in_sqrt, bias_correction,
                         centered=centered),
            scale_by_learning_rate(learning_rate),
            trace(momentum, nesterov),          # left out for Optax's momentum=None
        )

    Args:
      learning_rate: ``lr``, a number or a schedule.
      decay: the moving-average decay, in [0, 1).
      eps: added to the denominator, outside the root (>= 0).
      weight_decay: coupled L2 penalty.
      momentum: momentum on the preconditioned update (>= 0).
      centered: divide by the estimated standard deviation.
      eps_root: added inside the root (>= 0); keeps gradients through the update finite
        where a gradient is zero.
      maximize: ascend the objective instead (torch's ``maximize``: the gradient is negated
        first).

    Returns:
      ``chain(add_l2, scale_by_rms, trace, scale_by_learning_rate)``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt, params = gx.rmsprop(0.01), {"w": jnp.array([1.0, -2.0])}
      >>> updates, _ = opt.update({"w": jnp.array([0.5, -4.0])}, opt.init(params), params)
      >>> [round(u, 4) for u in updates["w"].tolist()]  # v_1 = 0.01 g^2: -lr * g / (0.1 |g|)
      [-0.1, 0.1]
    """
    who = "rmsprop"
    check_common(who, learning_rate, weight_decay)
    _validate.probability(who, "decay", decay)
    _validate.non_negative(who, "eps", eps)
    _validate.non_negative(who, "momentum", momentum)
    _validate.boolean(who, "centered", centered)
    _validate.non_negative(who, "eps_root", eps_root)
    spec = TorchSpec(
        "RMSprop",
        {
            "lr": learning_rate,
            "momentum": momentum,
            "alpha": decay,
            "eps": eps,
            "centered": centered,
            "weight_decay": weight_decay,
        },
    )
    return torch_optimizer(
        who,
        *decay_link(who, weight_decay),
        scale_by_rms(decay, eps, centered=centered, eps_root=eps_root),
        *optional(not _validate.is_static_zero(momentum), trace(momentum)),
        scale_by_learning_rate(learning_rate),
        maximize=maximize,
        torch_spec=spec if _validate.is_static_zero(eps_root) else None,  # torch has no eps_root
    )


def adadelta(
    learning_rate: ScalarOrSchedule = 1.0,
    *,
    rho: float = 0.9,
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    maximize: bool = False,
) -> GradientTransformation:
    """Adadelta (Zeiler, 2012), as ``torch.optim.Adadelta``.

    ::

        g <- g + weight_decay * p
        e_g <- rho * e_g + (1 - rho) * g^2
        d = sqrt(e_x + eps) / sqrt(e_g + eps) * g
        e_x <- rho * e_x + (1 - rho) * d^2
        p <- p - lr * d

    Args:
      learning_rate: ``lr``, which multiplies the step ``d`` (torch's default 1.0; Optax's
        ``adadelta`` scales by nothing unless given one).
      rho: the decay of both averages, in [0, 1].
      eps: added inside both roots (>= 0).
      weight_decay: coupled L2 penalty.
      maximize: ascend the objective instead (torch's ``maximize``: the gradient is negated
        first).

    Returns:
      ``chain(add_l2, scale_by_adadelta, scale_by_learning_rate)``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt, params = gx.adadelta(), {"w": jnp.array([1.0, -2.0])}
      >>> updates, _ = opt.update({"w": jnp.array([0.5, -4.0])}, opt.init(params), params)
      >>> [round(u, 5) for u in updates["w"].tolist()]  # -sqrt(eps / ((1 - rho) g^2)) * g
      [-0.00316, 0.00316]
    """
    who = "adadelta"
    check_common(who, learning_rate, weight_decay)
    _validate.probability(who, "rho", rho, closed=True)
    _validate.non_negative(who, "eps", eps)
    return torch_optimizer(
        who,
        *decay_link(who, weight_decay),
        scale_by_adadelta(rho, eps),
        scale_by_learning_rate(learning_rate),
        maximize=maximize,
        torch_spec=TorchSpec(
            "Adadelta", {"lr": learning_rate, "rho": rho, "eps": eps, "weight_decay": weight_decay}
        ),
    )
