"""Optimizers that set their own step size, with Optax's numbers: DoG and DoWG (distance over
gradients) and COCOB (coin betting), each a ``chain`` as ``optax.contrib`` builds it.

Complex params are updated as (real, imaginary) pairs
(:func:`gradxform.transforms.complex.real_pairs`); Optax gives them no rule of their own.
"""

from __future__ import annotations

from typing import Any

from gradxform import _validate
from gradxform._base import GradientTransformation, chain
from gradxform._types import MaskOrFn, ScalarOrSchedule
from gradxform.optimizers._links import check_common, decay_link
from gradxform.transforms.coin import scale_by_cocob
from gradxform.transforms.complex import real_pairs
from gradxform.transforms.dog import scale_by_dog, scale_by_dowg
from gradxform.transforms.scaling import scale_by_learning_rate


def _optional_decay(who: str, weight_decay: Any, mask: MaskOrFn) -> list[GradientTransformation]:
    """Optax's ``weight_decay=None``: no decay link at all."""
    _validate.mask(who, "mask", mask)
    if weight_decay is None:
        return []
    _validate.non_negative(who, "weight_decay", weight_decay)
    return decay_link(who, weight_decay, mask)


def dog(
    learning_rate: ScalarOrSchedule = 1.0,
    init_step: tuple[str, Any] = ("heuristic", 1e-6),
    eps: float = 1e-8,
    weight_decay: float | None = None,
    mask: MaskOrFn = None,
) -> GradientTransformation:
    """DoG, distance over gradients (Ivgi et al., 2023), as ``optax.contrib.dog``.

    ::

        g <- g + weight_decay * x                       (when weight_decay is given)
        r_t = max(r_{t-1}, ||x_t - x_0||),   G_t = G_{t-1} + ||g_t||^2
        x <- x - lr * r_t / sqrt(G_t + eps) * g_t

    Args:
      learning_rate: a factor of the step (1: DoG's own), a number or a schedule.
      init_step: ``(kind, value)``, see :func:`gradxform.scale_by_dog`; the default
        ``("heuristic", 1e-6)`` starts at ``r_0 = 1e-6 (1 + ||x_0||)`` (the authors suggest
        1e-4 with batch norm).
      eps: added to the sum of squared gradient norms (>= 0).
      weight_decay: coupled weight decay (>= 0), or ``None`` for none.
      mask: which leaves to decay (a tree of bools or a function of the params).

    Returns:
      ``chain(add_decayed_weights, scale_by_dog, scale_by_learning_rate)``; ``init`` needs the
      real initial params. Ivgi, Hinder & Carmon, "DoG is SGD's Best Friend", ICML 2023.

    Example:
      The first step is ``-r_0 g / ||g||``, with ``r_0 = 1e-6 (1 + ||x_0||) = 6e-6``:

      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt, params = gx.dog(), {"w": jnp.array([3.0, 4.0])}
      >>> updates, _ = opt.update({"w": jnp.array([3.0, 4.0])}, opt.init(params), params)
      >>> [round(u, 8) for u in updates["w"].tolist()]
      [-3.6e-06, -4.8e-06]
    """
    who = "dog"
    _validate.learning_rate(who, learning_rate)
    decay = _optional_decay(who, weight_decay, mask)
    _validate.non_negative(who, "eps", eps)
    return real_pairs(
        chain(
            *decay,
            scale_by_dog(init_step, eps=eps),
            scale_by_learning_rate(learning_rate),
        )
    )


def dowg(
    learning_rate: ScalarOrSchedule = 1.0,
    init_estim_sq_dist: float | None = None,
    eps: float = 1e-4,
    weight_decay: float | None = None,
    mask: MaskOrFn = None,
) -> GradientTransformation:
    """DoWG, distance over weighted gradients (Khaled et al., 2023), as ``optax.contrib.dowg``.

    ::

        g <- g + weight_decay * x                       (when weight_decay is given)
        d_t^2 = max(d_{t-1}^2, ||x_t - x_0||^2),   v_t = v_{t-1} + d_t^2 ||g_t||^2
        x <- x - lr * d_t^2 / (sqrt(v_t) + eps) * g_t

    Args:
      learning_rate: a factor of the step (1: DoWG's own), a number or a schedule.
      init_estim_sq_dist: the initial ``d_0^2`` (>= 0); ``None`` takes ``eps``.
      eps: added to the denominator (>= 0).
      weight_decay: coupled weight decay (>= 0), or ``None`` for none.
      mask: which leaves to decay.

    Returns:
      ``chain(add_decayed_weights, scale_by_dowg, scale_by_learning_rate)``. Khaled,
      Mishchenko & Jin, "DoWG Unleashed", NeurIPS 2023.

    Example:
      The first step is ``-d_0^2 / (d_0 ||g|| + eps) * g``, with ``d_0^2 = eps``:

      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt, params = gx.dowg(), {"w": jnp.array([3.0, 4.0])}
      >>> updates, _ = opt.update({"w": jnp.array([3.0, 4.0])}, opt.init(params), params)
      >>> [round(u, 6) for u in updates["w"].tolist()]
      [-0.005988, -0.007984]
    """
    who = "dowg"
    _validate.learning_rate(who, learning_rate)
    decay = _optional_decay(who, weight_decay, mask)
    return real_pairs(
        chain(
            *decay,
            scale_by_dowg(init_estim_sq_dist, eps=eps),
            scale_by_learning_rate(learning_rate),
        )
    )


def cocob(
    learning_rate: ScalarOrSchedule = 1.0,
    alpha: float = 100.0,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    mask: MaskOrFn = None,
) -> GradientTransformation:
    """COCOB-Backprop (Orabona & Tommasi, 2017), as ``optax.contrib.cocob``.

    ::

        g <- lr * (g + weight_decay * x)
        x <- x_0 + C_t / (L_t * max(G_t + L_t, alpha * L_t)) * (L_t + R_t)   (see scale_by_cocob)

    The learning rate scales the gradients fed to the betting game (1: COCOB's own).

    Args:
      learning_rate: a factor of the gradients (>= 0), a number or a schedule.
      alpha: bounds the first bets (> 0).
      eps: the initial scale ``L_0`` (>= 0).
      weight_decay: coupled weight decay (>= 0).
      mask: which leaves to decay.

    Returns:
      ``chain(add_decayed_weights, scale_by_learning_rate(flip_sign=False),
      scale_by_cocob)``. Orabona & Tommasi, "Training Deep Networks without Learning Rates
      Through Coin Betting", NeurIPS 2017.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt, params = gx.cocob(), {"w": jnp.array([1.0, -2.0])}
      >>> updates, _ = opt.update({"w": jnp.array([0.5, -4.0])}, opt.init(params), params)
      >>> [round(u, 4) for u in updates["w"].tolist()]  # L_1 = G_1 = |g|, R_0 = 0: -g / (alpha |g|)
      [-0.01, 0.01]
    """
    who = "cocob"
    check_common(who, learning_rate, weight_decay)
    _validate.mask(who, "mask", mask)
    return real_pairs(
        chain(
            *decay_link(who, weight_decay, mask),
            scale_by_learning_rate(learning_rate, flip_sign=False),
            scale_by_cocob(alpha, eps),
        )
    )
