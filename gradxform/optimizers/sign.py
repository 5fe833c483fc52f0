"""Sign-based optimizers: Lion, and Rprop as ``torch.optim.Rprop``."""

from __future__ import annotations

from typing import Any

from gradxform import _validate
from gradxform._base import GradientTransformation, chain
from gradxform._types import MaskOrFn, ScalarOrSchedule
from gradxform.optimizers._links import TorchSpec, check_common, decay_link, torch_optimizer
from gradxform.transforms.rprop import check_eta_minus, check_eta_plus, scale_by_rprop
from gradxform.transforms.scaling import scale, scale_by_learning_rate
from gradxform.transforms.sign import check_lion, scale_by_lion


def lion(
    learning_rate: ScalarOrSchedule = 1e-4,
    b1: float = 0.9,
    b2: float = 0.99,
    mu_dtype: Any | None = None,
    weight_decay: float = 1e-3,
    mask: MaskOrFn = None,
    *,
    mode: str = "hard",
    smooth_beta: float = 1.0,
) -> GradientTransformation:
    """Lion (Chen et al., 2023). Not in ``torch.optim``; defaults are the paper's and Optax's.

    ::

        p <- p - lr * (sign(b1 * m_{t-1} + (1 - b1) * g_t) + weight_decay * p)
        m_t = b2 * m_{t-1} + (1 - b2) * g_t

    with ``sign`` replaced by ``tanh(smooth_beta * x)`` (``mode="smooth"``) or by ``x`` where
    ``|x| < 1`` (``mode="refined"``), as in :func:`scale_by_lion`.

    Args:
      learning_rate: ``lr``, a number or a schedule (Lion wants 3-10x smaller than AdamW's).
      b1, b2: see :func:`scale_by_lion`.
      mu_dtype: dtype of the momentum.
      weight_decay: the decoupled decay ``lambda``.
      mask: which leaves to decay, as in :func:`adamw`.
      mode, smooth_beta: Optax's variants of the sign (see :func:`scale_by_lion`); ``optax.lion``
        itself has only the sign.

    Returns:
      ``chain(scale_by_lion, add_decayed_weights, scale_by_learning_rate)``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt, params = gx.lion(0.1, weight_decay=0.0), {"w": jnp.array([1.0, -2.0])}
      >>> updates, _ = opt.update({"w": jnp.array([0.5, -4.0])}, opt.init(params), params)
      >>> [round(u, 4) for u in updates["w"].tolist()]  # -lr * sign((1 - b1) g)
      [-0.1, 0.1]
    """
    who = "lion"
    check_common(who, learning_rate, weight_decay)
    check_lion(who, b1, b2, mu_dtype, mode, smooth_beta)
    _validate.mask(who, "mask", mask)
    return chain(
        scale_by_lion(b1, b2, mu_dtype, mode=mode, smooth_beta=smooth_beta),
        *decay_link(who, weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


def rprop(
    learning_rate: float = 1e-2,
    *,
    etas: tuple[float, float] = (0.5, 1.2),
    step_sizes: tuple[float, float] = (1e-6, 50.0),
    maximize: bool = False,
) -> GradientTransformation:
    """Rprop (Riedmiller & Braun, 1993), as ``torch.optim.Rprop``.

    Per coordinate, with ``s = sign(g_t * g_{t-1})`` and ``(eta_minus, eta_plus) = etas``::

        d_t = clip(d_{t-1} * (eta_plus if s > 0, eta_minus if s < 0, 1 if s == 0), *step_sizes)
        g_t <- 0 where s < 0                          (the step is skipped, and forgotten)
        p <- p - sign(g_t) * d_t

    Args:
      learning_rate: the initial step size ``d_0`` (>= 0); it does nothing after (a number, not
        a schedule).
      etas: ``(eta_minus, eta_plus)``, with ``0 < eta_minus < 1 < eta_plus``.
      step_sizes: ``(min_step_size, max_step_size)``, ``0 <= min <= max``.
      maximize: ascend the objective instead (torch's ``maximize``: the gradient is negated
        first).

    Returns:
      ``chain(scale_by_rprop, scale(-1))``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt, params = gx.rprop(0.1), {"w": jnp.ones(2)}
      >>> grads = {"w": jnp.array([0.5, -4.0])}
      >>> updates, state = opt.update(grads, opt.init(params), params)
      >>> [round(u, 4) for u in updates["w"].tolist()]  # -d_0 * sign(g)
      [-0.1, 0.1]
      >>> updates, state = opt.update(grads, state, params)
      >>> [round(u, 4) for u in updates["w"].tolist()]  # same sign: d_1 = 1.2 * d_0
      [-0.12, 0.12]
    """
    who = "rprop"
    _validate.non_negative(who, "learning_rate", learning_rate)
    eta_minus, eta_plus = _validate.pair(
        who, "etas", etas, (check_eta_minus, check_eta_plus), ("eta_minus", "eta_plus")
    )
    min_step_size, max_step_size = _validate.pair(
        who,
        "step_sizes",
        step_sizes,
        (_validate.non_negative, _validate.non_negative),
        ("min_step_size", "max_step_size"),
        ordered=True,
    )
    return torch_optimizer(
        who,
        scale_by_rprop(
            learning_rate, eta_minus, eta_plus, min_step_size, max_step_size, numerics="torch"
        ),
        scale(-1.0),
        maximize=maximize,
        torch_spec=TorchSpec(
            "Rprop",
            {
                "lr": learning_rate,
                "etas": (eta_minus, eta_plus),
                "step_sizes": (min_step_size, max_step_size),
            },
        ),
    )
