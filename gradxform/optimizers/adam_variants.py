"""Adam's relatives from ``optax.contrib``, with Optax's numbers: AdEMAMix and its simplified
form, ADOPT, ACProp and MADGRAD, each a ``chain`` as Optax builds it.

Complex params are updated as (real, imaginary) pairs
(:func:`gradxform.transforms.complex.real_pairs`); Optax gives them no rule of their own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from gradxform import _validate
from gradxform._base import GradientTransformation, chain
from gradxform._types import MaskOrFn, ScalarOrSchedule
from gradxform.optimizers._links import check_common, decay_link
from gradxform.transforms.adam_variants import scale_by_acprop, scale_by_adopt
from gradxform.transforms.ademamix import scale_by_ademamix, scale_by_simplified_ademamix
from gradxform.transforms.complex import real_pairs
from gradxform.transforms.madgrad import scale_by_madgrad
from gradxform.transforms.scaling import scale_by_learning_rate


def ademamix(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    b3: Any = 0.9999,
    alpha: Any = 5.0,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any | None = None,
    weight_decay: float = 0.0,
    mask: MaskOrFn = None,
) -> GradientTransformation:
    """AdEMAMix (Pagliardini et al., 2024), as ``optax.contrib.ademamix``.

    ::

        u_t = (m1_t / (1 - b1^t) + alpha * m2_t) / (sqrt(v_t / (1 - b2^t) + eps_root) + eps)
        x <- x - lr * (u_t + weight_decay * x)

    with ``m1`` (decay ``b1``) and ``m2`` (decay ``b3``) moving averages of the gradient and
    ``v`` of its square (see :func:`gradxform.scale_by_ademamix`). Optax's ``ademamix``
    defaults ``alpha`` to 5, its ``scale_by_ademamix`` to 6.

    Args:
      learning_rate: a number (>= 0) or a schedule.
      b1, b2, b3, alpha, eps, eps_root, mu_dtype: as in :func:`gradxform.scale_by_ademamix`.
      weight_decay: decoupled weight decay (>= 0).
      mask: which leaves to decay.

    Returns:
      ``chain(scale_by_ademamix, add_decayed_weights, scale_by_learning_rate)``.
      Pagliardini, Ablin & Grangier, "The AdEMAMix Optimizer: Better, Faster, Older", 2024.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt, params = gx.ademamix(0.1), {"w": jnp.array([1.0, -2.0])}
      >>> updates, _ = opt.update({"w": jnp.array([0.5, -4.0])}, opt.init(params), params)
      >>> [round(u, 5) for u in updates["w"].tolist()]  # -lr * (1 + alpha * (1 - b3)) * sign(g)
      [-0.10005, 0.10005]
    """
    who = "ademamix"
    check_common(who, learning_rate, weight_decay)
    _validate.mask(who, "mask", mask)
    return real_pairs(
        chain(
            scale_by_ademamix(b1, b2, b3, alpha, eps, eps_root, mu_dtype),
            *decay_link(who, weight_decay, mask),
            scale_by_learning_rate(learning_rate),
        )
    )


def simplified_ademamix(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.99,
    b2: float = 0.95,
    alpha: Any = 0.0,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    weight_decay: float = 0.0,
    mask: MaskOrFn = None,
) -> GradientTransformation:
    """Simplified AdEMAMix (Morwani et al., 2024), as ``optax.contrib.simplified_ademamix``.

    ::

        m_t = b1 * m_{t-1} + g_t,   n_t = b2 * n_{t-1} + (1 - b2) * g_t^2
        x <- x - lr * ((m_t + alpha * g_t) / (sqrt(n_t / (1 - b2^t) + eps_root) + eps)
                       + weight_decay * x)

    Args:
      learning_rate: a number (>= 0) or a schedule.
      b1, b2, alpha, eps, eps_root: as in :func:`gradxform.scale_by_simplified_ademamix`.
      weight_decay: decoupled weight decay (>= 0).
      mask: which leaves to decay.

    Returns:
      ``chain(scale_by_simplified_ademamix, add_decayed_weights, scale_by_learning_rate)``.
      Morwani et al., "Connections between Schedule-Free Optimizers, AdEMAMix, and
      Accelerated SGD Variants", 2024.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt, params = gx.simplified_ademamix(0.1), {"w": jnp.array([1.0, -2.0])}
      >>> updates, _ = opt.update({"w": jnp.array([0.5, -4.0])}, opt.init(params), params)
      >>> [round(u, 4) for u in updates["w"].tolist()]  # m_1 = g, n_hat_1 = g^2: -lr * sign(g)
      [-0.1, 0.1]
    """
    who = "simplified_ademamix"
    check_common(who, learning_rate, weight_decay)
    _validate.mask(who, "mask", mask)
    return real_pairs(
        chain(
            scale_by_simplified_ademamix(b1, b2, alpha, eps, eps_root),
            *decay_link(who, weight_decay, mask),
            scale_by_learning_rate(learning_rate),
        )
    )


def adopt(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.9999,
    eps: float = 1e-6,
    mu_dtype: Any | None = None,
    *,
    nesterov: bool = False,
    use_clipping: bool = True,
    clip_value_fn: Callable[[jax.Array], Any] | None = None,
) -> GradientTransformation:
    """ADOPT (Taniguchi et al., 2024), as ``optax.contrib.adopt``.

    ::

        d_t = clip(g_t / max(sqrt(v_{t-1}), eps), -c_t, c_t),   m_t = b1 m_{t-1} + (1 - b1) d_t
        x <- x - lr * m_t

    with ``v`` the moving average of ``g^2`` (decay ``b2``) and ``c_t = (t - 1)^(1/4)``
    (see :func:`gradxform.scale_by_adopt`; the first step only initialises ``v``).

    Args:
      learning_rate: a number (>= 0) or a schedule.
      b1, b2, eps, mu_dtype, nesterov, use_clipping: as in :func:`gradxform.scale_by_adopt`.
      clip_value_fn: the clipping bound as a function of the step count; ``None`` takes
        ``count ** 0.25``, Optax's default.

    Returns:
      ``chain(scale_by_adopt, scale_by_learning_rate)``. Taniguchi et al., "ADOPT: Modified
      Adam Can Converge with Any beta_2 with the Optimal Rate", NeurIPS 2024.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt, params = gx.adopt(0.1), {"w": jnp.ones(2)}
      >>> grads = {"w": jnp.array([0.5, -4.0])}
      >>> updates, state = opt.update(grads, opt.init(params), params)
      >>> float(jnp.abs(updates["w"]).max())  # the first step only sets v = g^2
      0.0
      >>> updates, state = opt.update(grads, state, params)
      >>> [round(u, 4) for u in updates["w"].tolist()]  # -lr * (1 - b1) * clip(g / |g|, -1, 1)
      [-0.01, 0.01]
    """
    who = "adopt"
    _validate.learning_rate(who, learning_rate)
    options = {} if clip_value_fn is None else {"clip_value_fn": clip_value_fn}
    return real_pairs(
        chain(
            scale_by_adopt(
                b1, b2, eps, mu_dtype, nesterov=nesterov, use_clipping=use_clipping, **options
            ),
            scale_by_learning_rate(learning_rate),
        )
    )


def acprop(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-16,
    eps_root: float = 1e-16,
    weight_decay: float = 0.0,
    mask: MaskOrFn = None,
) -> GradientTransformation:
    """ACProp (Zhuang et al., 2021), as ``optax.contrib.acprop``.

    ::

        s_t = b2 s_{t-1} + (1 - b2) (g_t - m_{t-1})^2 + eps_root
        x <- x - lr * (g_t / (sqrt(s_{t-1} / (1 - b2^(t-1))) + eps) + weight_decay * x)

    (see :func:`gradxform.scale_by_acprop`; the first step divides by ``1 + eps``).

    Args:
      learning_rate: a number (>= 0) or a schedule.
      b1, b2, eps, eps_root: as in :func:`gradxform.scale_by_acprop`.
      weight_decay: decoupled weight decay (>= 0).
      mask: which leaves to decay.

    Returns:
      ``chain(scale_by_acprop, add_decayed_weights, scale_by_learning_rate)``. Zhuang et
      al., "Momentum Centering and Asynchronous Update for Adaptive Gradient Methods",
      NeurIPS 2021.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt, params = gx.acprop(0.1), {"w": jnp.array([1.0, -2.0])}
      >>> updates, _ = opt.update({"w": jnp.array([0.5, -4.0])}, opt.init(params), params)
      >>> [round(u, 4) for u in updates["w"].tolist()]  # -lr * g / (1 + eps) on the first step
      [-0.05, 0.4]
    """
    who = "acprop"
    check_common(who, learning_rate, weight_decay)
    _validate.mask(who, "mask", mask)
    return real_pairs(
        chain(
            scale_by_acprop(b1, b2, eps, eps_root),
            *decay_link(who, weight_decay, mask),
            scale_by_learning_rate(learning_rate),
        )
    )


def madgrad(
    learning_rate: ScalarOrSchedule,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    eps: float = 1e-6,
) -> GradientTransformation:
    """MADGRAD (Defazio & Jelassi, 2021), as ``optax.contrib.madgrad``.

    ::

        g <- g + weight_decay * x
        S_k = S_{k-1} + l_k g^2,   s_k = s_{k-1} + l_k g,   l_k = (lr + eps) sqrt(k + 1)
        x <- (1 - momentum) * (x_0 - s_k / (cbrt(S_k) + eps)) + momentum * x

    Args:
      learning_rate: a number (>= 0) or a schedule; part of the rule.
      momentum: in [0, 1].
      weight_decay: coupled weight decay (>= 0).
      eps: as in :func:`gradxform.scale_by_madgrad` (>= 0).

    Returns:
      ``chain(add_decayed_weights, scale_by_madgrad)``. Defazio & Jelassi, "Adaptivity
      without Compromise", JMLR 2022.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt, params = gx.madgrad(0.1), {"w": jnp.array([1.0, -2.0])}
      >>> updates, _ = opt.update({"w": jnp.array([1.0, -8.0])}, opt.init(params), params)
      >>> [round(u, 4) for u in updates["w"].tolist()]  # -(1 - momentum) * lr^(2/3) * cbrt(g)
      [-0.0215, 0.0431]
    """
    who = "madgrad"
    check_common(who, learning_rate, weight_decay)
    return real_pairs(
        chain(
            *decay_link(who, weight_decay),
            scale_by_madgrad(learning_rate, momentum, eps),
        )
    )
