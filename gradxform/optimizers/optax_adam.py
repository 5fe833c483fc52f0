"""Adam's family as Optax names it where torch has no class: NAdamW and AdamaxW.

These follow Optax's numbers (each is ``optax.<name>``'s chain); complex params are complex
numbers, as in Optax, not torch's (real, imaginary) pairs.
"""

from __future__ import annotations

from typing import Any

from gradxform import _validate
from gradxform._base import GradientTransformation, chain
from gradxform._types import MaskOrFn, ScalarOrSchedule
from gradxform.optimizers._links import check_common, decay_link
from gradxform.transforms.adam import check_moments, scale_by_adam, scale_by_adamax
from gradxform.transforms.scaling import scale_by_learning_rate


def nadamw(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any | None = None,
    weight_decay: float = 1e-4,
    mask: MaskOrFn = None,
) -> GradientTransformation:
    """NAdamW: Adam with Nesterov's momentum (Dozat, 2016) and decoupled weight decay
    (Loshchilov & Hutter, 2019), as ``optax.nadamw``.

    ::

        m_t = b1 * m_{t-1} + (1 - b1) * g_t,   v_t = b2 * v_{t-1} + (1 - b2) * |g_t|^2
        m'_t = b1 * m_t / (1 - b1^(t+1)) + (1 - b1) * g_t / (1 - b1^t)
        p <- p - lr * (m'_t / (sqrt(v_t / (1 - b2^t) + eps_root) + eps) + weight_decay * p)

    No momentum schedule: torch's NAdam (:func:`gradxform.nadam` with
    ``decoupled_weight_decay=True``) has one and gives other numbers.

    Args:
      learning_rate: ``lr``, a number or a schedule (Optax has no default; 1e-3 as
        :func:`gradxform.adamw`).
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to the denominator outside the root (>= 0).
      eps_root: added inside the root (>= 0).
      mu_dtype: dtype of the first moment; by default each param's dtype.
      weight_decay: the decoupled decay ``lambda`` (>= 0; Optax's default 1e-4).
      mask: which leaves to decay: a tree of bools or a function of params.

    Returns:
      ``chain(scale_by_adam(nesterov=True), add_decayed_weights, scale_by_learning_rate)``.

    Example:
      The first step is ``-lr * (b1 (1 - b1) / (1 - b1^2) + 1) * sign(g)``:

      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt, params = gx.nadamw(0.1, weight_decay=0.0), {"w": jnp.array([1.0, -2.0])}
      >>> updates, _ = opt.update({"w": jnp.array([0.5, -4.0])}, opt.init(params), params)
      >>> [round(u, 4) for u in updates["w"].tolist()]
      [-0.1474, 0.1474]
    """
    who = "nadamw"
    check_common(who, learning_rate, weight_decay)
    check_moments(who, b1, b2, eps, eps_root)
    _validate.dtype(who, "mu_dtype", mu_dtype)
    _validate.mask(who, "mask", mask)
    return chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=True),
        *decay_link(who, weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


def adamaxw(
    learning_rate: ScalarOrSchedule = 2e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 1e-4,
    mask: MaskOrFn = None,
) -> GradientTransformation:
    """AdamaxW: Adamax (Kingma & Ba, 2015, section 7) with decoupled weight decay
    (Loshchilov & Hutter, 2019), as ``optax.adamaxw``.

    ::

        m_t = b1 * m_{t-1} + (1 - b1) * g_t
        u_t = max(b2 * u_{t-1}, |g_t| + eps)
        p <- p - lr * ((m_t / (1 - b1^t)) / u_t + weight_decay * p)

    Args:
      learning_rate: ``lr``, a number or a schedule (Optax has no default; 2e-3 as
        :func:`gradxform.adamax`).
      b1: decay of the first moment, in [0, 1).
      b2: decay of the infinity norm, in [0, 1).
      eps: added to ``|g|`` (>= 0).
      weight_decay: the decoupled decay ``lambda`` (>= 0; Optax's default 1e-4).
      mask: which leaves to decay: a tree of bools or a function of params.

    Returns:
      ``chain(scale_by_adamax, add_decayed_weights, scale_by_learning_rate)``; the state of
      :func:`gradxform.scale_by_adamax` names the infinity norm ``u`` (Optax's ``nu``).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt, params = gx.adamaxw(0.1, weight_decay=0.5), {"w": jnp.array([1.0, -2.0])}
      >>> updates, _ = opt.update({"w": jnp.array([0.5, -4.0])}, opt.init(params), params)
      >>> [round(u, 4) for u in updates["w"].tolist()]  # -lr * (sign(g) + weight_decay * p)
      [-0.15, 0.2]
    """
    who = "adamaxw"
    check_common(who, learning_rate, weight_decay)
    check_moments(who, b1, b2, eps)
    _validate.mask(who, "mask", mask)
    return chain(
        scale_by_adamax(b1, b2, eps),
        *decay_link(who, weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )
