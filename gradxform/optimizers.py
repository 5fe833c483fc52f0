"""The classic optimizers, each one ``chain`` of transformations.

Defaults and hyperparameter names are PyTorch's, and given the same hyperparameters each
optimizer reproduces the corresponding ``torch.optim`` class step for step. ``learning_rate``
is a number or a schedule (a function of the update count, 0 for the first update).
"""

from __future__ import annotations

from typing import Any

from gradxform import _checks
from gradxform._base import GradientTransformation, chain
from gradxform.transforms.adaptive import (
    scale_by_adam,
    scale_by_adamax,
    scale_by_lion,
    scale_by_nadam,
    scale_by_rms,
    scale_by_rss,
)
from gradxform.transforms.decay import MaskOrFn, decayed_weights
from gradxform.transforms.momentum import trace
from gradxform.transforms.scaling import ScalarOrSchedule, scale_by_learning_rate


def _maybe(condition: bool, transform: GradientTransformation) -> list[GradientTransformation]:
    return [transform] if condition else []


def _check_common(who: str, learning_rate: Any, weight_decay: Any) -> None:
    _checks.learning_rate(who, learning_rate)
    _checks.non_negative(who, "weight_decay", weight_decay)


def _check_betas(who: str, b1: Any, b2: Any, eps: Any) -> None:
    _checks.in_unit_interval(who, "b1", b1)
    _checks.in_unit_interval(who, "b2", b2)
    _checks.non_negative(who, "eps", eps)


def sgd(
    learning_rate: ScalarOrSchedule,
    momentum: float = 0.0,
    nesterov: bool = False,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
) -> GradientTransformation:
    """Stochastic gradient descent, as ``torch.optim.SGD``.

    ::

        g <- g + weight_decay * p
        b_1 = g_1,   b_t = momentum * b_{t-1} + (1 - dampening) * g_t
        d = g + momentum * b   if nesterov   else   b        (d = g without momentum)
        p <- p - lr * d

    Args:
      learning_rate: ``lr``, a number or a schedule.
      momentum: the momentum factor (>= 0; 0 turns momentum off).
      nesterov: Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).
      dampening: torch's dampening of the gradient in the buffer.
      weight_decay: coupled L2 penalty.

    Returns:
      ``chain(add_l2, trace, scale_by_learning_rate)`` (parts that do nothing left out).
    """
    who = "sgd"
    _check_common(who, learning_rate, weight_decay)
    _checks.non_negative(who, "momentum", momentum)
    _checks.non_negative(who, "dampening", dampening)
    no_momentum = _checks.is_static_zero(momentum)
    if nesterov and (no_momentum or _checks.is_static_nonzero(dampening)):
        raise ValueError(
            f"{who}: Nesterov momentum needs `momentum` > 0 and `dampening` = 0, got "
            f"momentum={momentum!r}, dampening={dampening!r}"
        )
    return chain(
        *_maybe(not _checks.is_static_zero(weight_decay), decayed_weights(weight_decay, None, who)),
        *_maybe(not no_momentum, trace(momentum, nesterov=nesterov, dampening=dampening)),
        scale_by_learning_rate(learning_rate),
    )


def adagrad(
    learning_rate: ScalarOrSchedule = 0.01,
    lr_decay: float = 0.0,
    weight_decay: float = 0.0,
    initial_accumulator_value: float = 0.0,
    eps: float = 1e-10,
) -> GradientTransformation:
    """Adagrad (Duchi et al., 2011), as ``torch.optim.Adagrad``.

    ::

        g <- g + weight_decay * p
        s_t = s_{t-1} + |g_t|^2,   s_0 = initial_accumulator_value
        p <- p - lr_t * g_t / (sqrt(s_t) + eps),   lr_t = lr / (1 + (t - 1) * lr_decay)

    Args:
      learning_rate: ``lr``, a number or a schedule.
      lr_decay: the ``1/t`` decay of the learning rate (>= 0).
      weight_decay: coupled L2 penalty.
      initial_accumulator_value: the accumulator's start (>= 0).
      eps: added to the denominator (>= 0).

    Returns:
      ``chain(add_l2, scale_by_rss, scale_by_learning_rate)``.
    """
    who = "adagrad"
    _check_common(who, learning_rate, weight_decay)
    _checks.non_negative(who, "lr_decay", lr_decay)
    _checks.non_negative(who, "initial_accumulator_value", initial_accumulator_value)
    _checks.non_negative(who, "eps", eps)
    rate = learning_rate
    if not _checks.is_static_zero(lr_decay):

        def rate(count):
            base = learning_rate(count) if callable(learning_rate) else learning_rate
            return base / (1 + count * lr_decay)

    return chain(
        *_maybe(not _checks.is_static_zero(weight_decay), decayed_weights(weight_decay, None, who)),
        scale_by_rss(initial_accumulator_value, eps),
        scale_by_learning_rate(rate),
    )


def rmsprop(
    learning_rate: ScalarOrSchedule = 0.01,
    decay: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    centered: bool = False,
) -> GradientTransformation:
    """RMSProp (Hinton, 2012), as ``torch.optim.RMSprop`` (``decay`` is torch's ``alpha``).

    ::

        g <- g + weight_decay * p
        v_t = decay * v_{t-1} + (1 - decay) * |g_t|^2
        d_t = g_t / (sqrt(v_t - |c_t|^2 if centered else v_t) + eps)
        b_t = momentum * b_{t-1} + d_t          (b = d without momentum)
        p <- p - lr * b_t

    Args:
      learning_rate: ``lr``, a number or a schedule.
      decay: the moving-average decay, in [0, 1).
      eps: added to the denominator, outside the root (>= 0).
      weight_decay: coupled L2 penalty.
      momentum: momentum on the preconditioned update (>= 0).
      centered: divide by the estimated standard deviation.

    Returns:
      ``chain(add_l2, scale_by_rms, trace, scale_by_learning_rate)``.
    """
    who = "rmsprop"
    _check_common(who, learning_rate, weight_decay)
    _checks.in_unit_interval(who, "decay", decay)
    _checks.non_negative(who, "eps", eps)
    _checks.non_negative(who, "momentum", momentum)
    return chain(
        *_maybe(not _checks.is_static_zero(weight_decay), decayed_weights(weight_decay, None, who)),
        scale_by_rms(decay, eps, eps_in_sqrt=False, centered=centered),
        *_maybe(not _checks.is_static_zero(momentum), trace(momentum)),
        scale_by_learning_rate(learning_rate),
    )


def adam(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
    *,
    eps_root: float = 0.0,
    mu_dtype: Any | None = None,
    nu_dtype: Any | None = None,
) -> GradientTransformation:
    """Adam (Kingma & Ba, 2015), as ``torch.optim.Adam`` (``betas=(b1, b2)``).

    ::

        g <- g + weight_decay * p                     (coupled L2, as torch's Adam)
        m_t = b1 * m_{t-1} + (1 - b1) * g_t
        v_t = b2 * v_{t-1} + (1 - b2) * |g_t|^2       (v <- max(v_max, v) with amsgrad)
        p <- p - lr * (m_t / (1 - b1^t)) / (sqrt(v_t / (1 - b2^t)) + eps)

    Args:
      learning_rate: ``lr``, a number or a schedule.
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to the denominator (>= 0).
      weight_decay: coupled L2 penalty (use :func:`adamw` for decoupled decay).
      amsgrad: AMSGrad's running maximum of the second moment.
      eps_root: added inside the root (>= 0).
      mu_dtype: dtype of the first moment.
      nu_dtype: dtype of the second moment (float32 for float16 params).

    Returns:
      ``chain(add_l2, scale_by_adam, scale_by_learning_rate)``.
    """
    who = "adam"
    _check_common(who, learning_rate, weight_decay)
    _check_betas(who, b1, b2, eps)
    return chain(
        *_maybe(not _checks.is_static_zero(weight_decay), decayed_weights(weight_decay, None, who)),
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype=mu_dtype, amsgrad=amsgrad, nu_dtype=nu_dtype),
        scale_by_learning_rate(learning_rate),
    )


def amsgrad(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    *,
    eps_root: float = 0.0,
    mu_dtype: Any | None = None,
    nu_dtype: Any | None = None,
) -> GradientTransformation:
    """AMSGrad (Reddi et al., 2018): :func:`adam` with ``amsgrad=True``.

    ::

        v'_t = max(v'_{t-1}, v_t),   p <- p - lr * m_hat_t / (sqrt(v'_t / (1 - b2^t)) + eps)

    Args:
      learning_rate, b1, b2, eps, weight_decay, eps_root, mu_dtype, nu_dtype: as in
        :func:`adam`.

    Returns:
      ``adam(..., amsgrad=True)``: ``chain(add_l2, scale_by_adam, scale_by_learning_rate)``.
    """
    who = "amsgrad"
    _check_common(who, learning_rate, weight_decay)
    _check_betas(who, b1, b2, eps)
    return adam(
        learning_rate,
        b1,
        b2,
        eps,
        weight_decay,
        True,
        eps_root=eps_root,
        mu_dtype=mu_dtype,
        nu_dtype=nu_dtype,
    )


def adamw(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
    amsgrad: bool = False,
    mask: MaskOrFn = None,
    *,
    eps_root: float = 0.0,
    mu_dtype: Any | None = None,
    nu_dtype: Any | None = None,
) -> GradientTransformation:
    """AdamW (Loshchilov & Hutter, 2019), as ``torch.optim.AdamW``: decoupled weight decay.

    ::

        p <- p - lr * (m_hat_t / (sqrt(v_hat_t) + eps) + weight_decay * p)

    Args:
      learning_rate: ``lr``, a number or a schedule.
      b1, b2, eps, amsgrad, eps_root, mu_dtype, nu_dtype: as in :func:`adam`.
      weight_decay: the decoupled decay ``lambda`` (torch's default 1e-2).
      mask: which leaves to decay: a tree of bools or a function of params, e.g.
        :func:`gradxform.decay_matrices_only` to leave biases and scales alone.

    Returns:
      ``chain(scale_by_adam, add_decayed_weights, scale_by_learning_rate)``.
    """
    who = "adamw"
    _check_common(who, learning_rate, weight_decay)
    _check_betas(who, b1, b2, eps)
    return chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype=mu_dtype, amsgrad=amsgrad, nu_dtype=nu_dtype),
        *_maybe(not _checks.is_static_zero(weight_decay), decayed_weights(weight_decay, mask, who)),
        scale_by_learning_rate(learning_rate),
    )


def adamax(
    learning_rate: ScalarOrSchedule = 2e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
) -> GradientTransformation:
    """Adamax (Kingma & Ba, 2015), as ``torch.optim.Adamax``.

    ::

        g <- g + weight_decay * p
        m_t = b1 * m_{t-1} + (1 - b1) * g_t
        u_t = max(b2 * u_{t-1}, |g_t| + eps)
        p <- p - lr * (m_t / (1 - b1^t)) / u_t

    Returns:
      ``chain(add_l2, scale_by_adamax, scale_by_learning_rate)``.
    """
    who = "adamax"
    _check_common(who, learning_rate, weight_decay)
    _check_betas(who, b1, b2, eps)
    return chain(
        *_maybe(not _checks.is_static_zero(weight_decay), decayed_weights(weight_decay, None, who)),
        scale_by_adamax(b1, b2, eps),
        scale_by_learning_rate(learning_rate),
    )


def nadam(
    learning_rate: ScalarOrSchedule = 2e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum_decay: float = 4e-3,
    decoupled_weight_decay: bool = False,
) -> GradientTransformation:
    """NAdam (Dozat, 2016), as ``torch.optim.NAdam``.

    ::

        p <- p - lr * ((1 - mu_t) / (1 - P_t) * g_t / d_t
                       + mu_{t+1} / (1 - P_t mu_{t+1}) * m_t / d_t)

    with ``mu_t = b1 * (1 - 0.5 * 0.96^(t * momentum_decay))``, ``P_t = prod mu_i`` and
    ``d_t = sqrt(v_t / (1 - b2^t)) + eps`` (see :func:`scale_by_nadam`).

    Args:
      learning_rate: ``lr``, a number or a schedule.
      b1, b2, eps: as in :func:`adam`.
      weight_decay: the weight decay factor.
      momentum_decay: torch's ``momentum_decay`` (psi).
      decoupled_weight_decay: decay as AdamW does (``p <- p - lr * weight_decay * p``)
        rather than adding ``weight_decay * p`` to the gradient.

    Returns:
      ``chain(add_l2, scale_by_nadam, add_decayed_weights, scale_by_learning_rate)``.
    """
    who = "nadam"
    _check_common(who, learning_rate, weight_decay)
    _check_betas(who, b1, b2, eps)
    decays = not _checks.is_static_zero(weight_decay)
    return chain(
        *_maybe(decays and not decoupled_weight_decay, decayed_weights(weight_decay, None, who)),
        scale_by_nadam(b1, b2, eps, momentum_decay),
        *_maybe(decays and decoupled_weight_decay, decayed_weights(weight_decay, None, who)),
        scale_by_learning_rate(learning_rate),
    )


def lion(
    learning_rate: ScalarOrSchedule = 1e-4,
    b1: float = 0.9,
    b2: float = 0.99,
    weight_decay: float = 1e-3,
    mask: MaskOrFn = None,
    *,
    mu_dtype: Any | None = None,
) -> GradientTransformation:
    """Lion (Chen et al., 2023). Not in ``torch.optim``; defaults are the paper's and Optax's.

    ::

        p <- p - lr * (sign(b1 * m_{t-1} + (1 - b1) * g_t) + weight_decay * p)
        m_t = b2 * m_{t-1} + (1 - b2) * g_t

    Args:
      learning_rate: ``lr``, a number or a schedule (Lion wants 3-10x smaller than AdamW's).
      b1, b2: see :func:`scale_by_lion`.
      weight_decay: the decoupled decay ``lambda``.
      mask: which leaves to decay, as in :func:`adamw`.
      mu_dtype: dtype of the momentum.

    Returns:
      ``chain(scale_by_lion, add_decayed_weights, scale_by_learning_rate)``.
    """
    who = "lion"
    _check_common(who, learning_rate, weight_decay)
    _checks.in_unit_interval(who, "b1", b1)
    _checks.in_unit_interval(who, "b2", b2)
    return chain(
        scale_by_lion(b1, b2, mu_dtype=mu_dtype),
        *_maybe(not _checks.is_static_zero(weight_decay), decayed_weights(weight_decay, mask, who)),
        scale_by_learning_rate(learning_rate),
    )
