"""Adam with corrected steps, as ``torch.optim``'s classes: NAdam (Nesterov's momentum, with
torch's momentum schedule) and RAdam (the variance's warmup rectified)."""

from __future__ import annotations

from gradxform import _validate
from gradxform._base import GradientTransformation
from gradxform._types import ScalarOrSchedule
from gradxform.optimizers._links import adam_spec, check_common, decay_link, torch_optimizer
from gradxform.transforms.adam import check_moments
from gradxform.transforms.nadam import scale_by_nadam
from gradxform.transforms.radam import scale_by_radam
from gradxform.transforms.scaling import scale_by_learning_rate


def nadam(
    learning_rate: ScalarOrSchedule = 2e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    *,
    weight_decay: float = 0.0,
    momentum_decay: float = 4e-3,
    decoupled_weight_decay: bool = False,
    maximize: bool = False,
) -> GradientTransformation:
    """NAdam (Dozat, 2016), as ``torch.optim.NAdam``.

    ::

        p <- p - lr * ((1 - mu_t) / (1 - P_t) * g_t / d_t
                       + mu_{t+1} / (1 - P_t mu_{t+1}) * m_t / d_t)

    with ``mu_t = b1 * (1 - 0.5 * 0.96^(t * momentum_decay))``, ``P_t = prod mu_i`` and
    ``d_t = sqrt(v_t / (1 - b2^t) + eps_root) + eps`` (see :func:`scale_by_nadam`).

    Args:
      learning_rate: ``lr``, a number or a schedule.
      b1, b2, eps, eps_root: as in :func:`adam`.
      weight_decay: the weight decay factor.
      momentum_decay: torch's ``momentum_decay`` (psi).
      decoupled_weight_decay: decay as AdamW does (``p <- p - lr * weight_decay * p``)
        rather than adding ``weight_decay * p`` to the gradient.
      maximize: ascend the objective instead (torch's ``maximize``: the gradient is negated
        first).

    Returns:
      ``chain(add_l2, scale_by_nadam, add_decayed_weights, scale_by_learning_rate)``.

    Example:
      The first step is ``-lr * sign(g) * (1 + (1 - b1) mu_2 / (1 - mu_1 mu_2))``:

      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt, params = gx.nadam(0.1), {"w": jnp.array([1.0, -2.0])}
      >>> updates, _ = opt.update({"w": jnp.array([0.5, -4.0])}, opt.init(params), params)
      >>> [round(u, 4) for u in updates["w"].tolist()]
      [-0.1056, 0.1056]
    """
    who = "nadam"
    check_common(who, learning_rate, weight_decay)
    check_moments(who, b1, b2, eps, eps_root)
    _validate.non_negative(who, "momentum_decay", momentum_decay)
    _validate.boolean(who, "decoupled_weight_decay", decoupled_weight_decay)
    coupled = decay_link(who, weight_decay)
    more = {"momentum_decay": momentum_decay, "decoupled_weight_decay": decoupled_weight_decay}
    spec = adam_spec("NAdam", learning_rate, b1, b2, eps, weight_decay, more)
    return torch_optimizer(
        who,
        *([] if decoupled_weight_decay else coupled),
        scale_by_nadam(b1, b2=b2, eps=eps, eps_root=eps_root, momentum_decay=momentum_decay),
        *(coupled if decoupled_weight_decay else []),
        scale_by_learning_rate(learning_rate),
        maximize=maximize,
        torch_spec=spec if _validate.is_static_zero(eps_root) else None,  # torch has no eps_root
    )


def radam(
    learning_rate: ScalarOrSchedule = 1e-3,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    decoupled_weight_decay: bool = False,
    maximize: bool = False,
) -> GradientTransformation:
    """RAdam (Liu et al., 2020), as ``torch.optim.RAdam`` (``betas=(b1, b2)``).

    With ``rho_t``, ``r_t`` the length of the approximated moving average and the
    rectification factor of :func:`gradxform.scale_by_radam`::

        g <- g + weight_decay * p                     (coupled L2, the default)
        m_t = b1 * m_{t-1} + (1 - b1) * g_t,   v_t = b2 * v_{t-1} + (1 - b2) * g_t^2
        p <- p - lr * r_t * (m_t / (1 - b1^t)) * sqrt(1 - b2^t) / (sqrt(v_t) + eps)
                                                      if rho_t > 5
        p <- p - lr * m_t / (1 - b1^t)                otherwise

    Args:
      learning_rate: ``lr``, a number or a schedule.
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to the root of the raw second moment (>= 0).
      weight_decay: the weight decay factor (>= 0).
      decoupled_weight_decay: decay as AdamW does, ``p <- p - lr * weight_decay * p`` (torch's
        ``p *= 1 - lr * weight_decay`` before the step), instead of adding
        ``weight_decay * p`` to the gradient.
      maximize: ascend the objective instead (torch's ``maximize``: the gradient is negated
        first).

    Returns:
      ``chain(add_l2, scale_by_radam, scale_by_learning_rate)`` (the decay after
      ``scale_by_radam`` when decoupled).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt, params = gx.radam(0.1), {"w": jnp.array([1.0, -2.0])}
      >>> updates, _ = opt.update({"w": jnp.array([0.5, -4.0])}, opt.init(params), params)
      >>> [round(u, 4) for u in updates["w"].tolist()]  # rho_1 <= 5: the unrectified -lr * g
      [-0.05, 0.4]
    """
    who = "radam"
    check_common(who, learning_rate, weight_decay)
    check_moments(who, b1, b2, eps)
    _validate.boolean(who, "decoupled_weight_decay", decoupled_weight_decay)
    decay = decay_link(who, weight_decay)
    more = {"decoupled_weight_decay": decoupled_weight_decay}
    return torch_optimizer(
        who,
        *([] if decoupled_weight_decay else decay),
        scale_by_radam(b1, b2, eps, numerics="torch"),
        *(decay if decoupled_weight_decay else []),
        scale_by_learning_rate(learning_rate),
        maximize=maximize,
        torch_spec=adam_spec("RAdam", learning_rate, b1, b2, eps, weight_decay, more),
    )
