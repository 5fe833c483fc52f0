"""Adaptive optimizers from Optax's catalogue, with Optax's names, signatures and numbers:
AdaBelief, Adan, NovoGrad, Yogi, and the optimistic gradient methods."""

from __future__ import annotations

from typing import Any

from gradxform import _validate
from gradxform._base import GradientTransformation, chain
from gradxform._types import MaskOrFn, ScalarOrSchedule
from gradxform.optimizers._links import check_common, decay_link
from gradxform.transforms.adam import check_moments, scale_by_adam
from gradxform.transforms.adan import NUMERICS, proximal_decayed_weights, scale_by_adan
from gradxform.transforms.adaptive import scale_by_belief, scale_by_novograd, scale_by_yogi
from gradxform.transforms.optimistic import scale_by_optimistic_gradient
from gradxform.transforms.scaling import scale_by_learning_rate


def adabelief(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-16,
    eps_root: float = 1e-16,
    *,
    nesterov: bool = False,
) -> GradientTransformation:
    """AdaBelief (Zhuang et al., 2020), Optax's ``adabelief``: Adam with the second moment of
    the gradient's deviation from its average (the "belief") in place of the gradient's.

    ::

        p <- p - lr * m_hat_t / (sqrt(s_hat_t) + eps),   s_t ~ EMA of |g_t - m_t|^2 (+ eps_root)

    Args:
      learning_rate: ``lr``, a number or a schedule.
      b1, b2, eps, eps_root, nesterov: see :func:`gradxform.scale_by_belief`.

    Returns:
      ``chain(scale_by_belief, scale_by_learning_rate)``.

    References:
      Zhuang et al., `AdaBelief Optimizer: Adapting Stepsizes by the Belief in Observed
      Gradients <https://arxiv.org/abs/2010.07468>`_, 2020.

    Example:
      With ``s_hat_1 = (g - m_1)^2 = 0.81 g^2`` the first step is ``-lr * sign(g) / 0.9``:

      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt, params = gx.adabelief(0.1), {"w": jnp.array([1.0, -2.0])}
      >>> updates, _ = opt.update({"w": jnp.array([0.5, -4.0])}, opt.init(params), params)
      >>> [round(u, 4) for u in updates["w"].tolist()]
      [-0.1111, 0.1111]
    """
    _validate.learning_rate("adabelief", learning_rate)
    check_moments("adabelief", b1, b2, eps, eps_root)
    _validate.boolean("adabelief", "nesterov", nesterov)
    return chain(
        scale_by_belief(b1, b2, eps, eps_root, nesterov=nesterov),
        scale_by_learning_rate(learning_rate),
    )


def adan(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.98,
    b2: float = 0.92,
    b3: float = 0.99,
    eps: float = 1e-8,
    eps_root: float = 1e-8,
    weight_decay: float = 0.0,
    mask: MaskOrFn = None,
    *,
    numerics: str = "optax",
) -> GradientTransformation:
    """Adan (Xie et al., 2022), Optax's ``adan`` (or the authors' official code's numbers).

    With ``u_t`` Adan's direction (:func:`gradxform.scale_by_adan`)::

        p <- p - lr * (u_t + weight_decay * p)            numerics="optax" (Optax's)
        p <- (p - lr * u_t) / (1 + lr * weight_decay)     numerics="official" (the authors' code)

    ``numerics`` also sets the weight of the gradient difference in ``u_t``: ``1 - b2``
    (Optax's) or ``b2`` (the official code's).

    Args:
      learning_rate: ``lr``, a number or a schedule.
      b1, b2, b3, eps, eps_root: see :func:`gradxform.scale_by_adan`.
      weight_decay: the decoupled decay (>= 0).
      mask: which leaves to decay (see :func:`gradxform.add_decayed_weights`).
      numerics: ``"optax"`` or ``"official"``.

    Returns:
      ``chain(scale_by_adan, add_decayed_weights, scale_by_learning_rate)`` (Optax's), or
      ``chain(scale_by_adan, scale_by_learning_rate, proximal decay)`` (official).

    References:
      Xie et al., `Adan: Adaptive Nesterov Momentum Algorithm for Faster Optimizing Deep
      Models <https://arxiv.org/abs/2208.06677>`_, 2022.

    Example:
      The first step (``m_hat = g``, ``n_hat = g^2``, no difference yet) is ``-lr * sign(g)``:

      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt, params = gx.adan(0.1), {"w": jnp.array([1.0, -2.0])}
      >>> updates, _ = opt.update({"w": jnp.array([0.5, -4.0])}, opt.init(params), params)
      >>> [round(u, 4) for u in updates["w"].tolist()]
      [-0.1, 0.1]
    """
    who = "adan"
    check_common(who, learning_rate, weight_decay)
    for name, value in (("b1", b1), ("b2", b2), ("b3", b3)):
        _validate.probability(who, name, value)
    _validate.non_negative(who, "eps", eps)
    _validate.non_negative(who, "eps_root", eps_root)
    _validate.mask(who, "mask", mask)
    _validate.choice(who, "numerics", numerics, NUMERICS)
    direction = scale_by_adan(b1, b2, b3, eps, eps_root, numerics=numerics)
    if numerics == "official":
        decays = not _validate.is_static_zero(weight_decay)
        return chain(
            direction,
            scale_by_learning_rate(learning_rate),
            *([proximal_decayed_weights(learning_rate, weight_decay, mask, who=who)] * decays),
        )
    return chain(
        direction, *decay_link(who, weight_decay, mask), scale_by_learning_rate(learning_rate)
    )


def novograd(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.25,
    eps: float = 1e-6,
    eps_root: float = 0.0,
    weight_decay: float = 0.0,
) -> GradientTransformation:
    """NovoGrad (Ginsburg et al., 2019), Optax's ``novograd``: per-layer normalised gradients
    with momentum.

    ::

        v_t = b2 * v_{t-1} + (1 - b2) * ||g_t||^2          (per leaf; v_1 = ||g_1||^2)
        m_t = b1 * m_{t-1} + g_t / (sqrt(v_t + eps_root) + eps) + weight_decay * p
        p <- p - lr * m_t

    Args:
      learning_rate: ``lr``, a number or a schedule.
      b1, b2, eps, eps_root, weight_decay: see :func:`gradxform.scale_by_novograd`.

    Returns:
      ``chain(scale_by_novograd, scale_by_learning_rate)``.

    References:
      Ginsburg et al., `Stochastic Gradient Methods with Layer-wise Adaptive Moments for
      Training of Deep Networks <https://arxiv.org/abs/1905.11286>`_, 2019.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt, params = gx.novograd(0.1), {"w": jnp.array([1.0, -2.0])}
      >>> updates, _ = opt.update({"w": jnp.array([3.0, 4.0])}, opt.init(params), params)
      >>> [round(u, 4) for u in updates["w"].tolist()]  # -lr * g / ||g||
      [-0.06, -0.08]
    """
    who = "novograd"
    check_common(who, learning_rate, weight_decay)
    check_moments(who, b1, b2, eps, eps_root)
    return chain(
        scale_by_novograd(b1, b2, eps, eps_root, weight_decay),
        scale_by_learning_rate(learning_rate),
    )


def yogi(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-3,
) -> GradientTransformation:
    """Yogi (Zaheer et al., 2018), Optax's ``yogi``: Adam whose second moment moves additively.

    ::

        v_t = v_{t-1} - (1 - b2) * sign(v_{t-1} - g_t^2) * g_t^2
        p <- p - lr * m_hat_t / (sqrt(v_hat_t) + eps)

    Args:
      learning_rate: ``lr``, a number or a schedule.
      b1, b2, eps: see :func:`gradxform.scale_by_yogi`.

    Returns:
      ``chain(scale_by_yogi, scale_by_learning_rate)``.

    References:
      Zaheer et al., `Adaptive Methods for Nonconvex Optimization
      <https://papers.nips.cc/paper/8186-adaptive-methods-for-nonconvex-optimization>`_, 2018.

    Example:
      With ``v_0 = 1e-6``, ``v_hat_1 = g^2 + 1e-3`` and the first step is
      ``-lr * g / (sqrt(g^2 + 1e-3) + eps)``:

      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt, params = gx.yogi(0.1), {"w": jnp.array([1.0, -2.0])}
      >>> updates, _ = opt.update({"w": jnp.array([0.5, -4.0])}, opt.init(params), params)
      >>> [round(u, 4) for u in updates["w"].tolist()]
      [-0.0996, 0.1]
    """
    _validate.learning_rate("yogi", learning_rate)
    check_moments("yogi", b1, b2, eps)
    return chain(scale_by_yogi(b1, b2, eps), scale_by_learning_rate(learning_rate))


def optimistic_gradient_descent(
    learning_rate: ScalarOrSchedule, alpha: float = 1.0, beta: float = 1.0
) -> GradientTransformation:
    """Optimistic gradient descent (Mokhtari et al., 2019), Optax's.

    ::

        p <- p - lr * ((alpha + beta) * g_t - beta * g_{t-1}),     g_0 = g_1

    Args:
      learning_rate: ``lr``, a number or a schedule.
      alpha, beta: see :func:`gradxform.scale_by_optimistic_gradient`.

    Returns:
      ``chain(scale_by_optimistic_gradient, scale_by_learning_rate)``.

    References:
      Mokhtari et al., `A Unified Analysis of Extra-gradient and Optimistic Gradient Methods
      for Saddle Point Problems <https://arxiv.org/abs/1901.08511>`_, 2019.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt, params = gx.optimistic_gradient_descent(0.1), {"w": jnp.zeros(2)}
      >>> updates, state = opt.update({"w": jnp.array([1.0, 2.0])}, opt.init(params), params)
      >>> [round(u, 4) for u in updates["w"].tolist()]  # g_0 = g_1: -lr * g_1
      [-0.1, -0.2]
      >>> updates, state = opt.update({"w": jnp.array([2.0, 2.0])}, state, params)
      >>> [round(u, 4) for u in updates["w"].tolist()]  # -lr * (2 * g_2 - g_1)
      [-0.3, -0.2]
    """
    who = "optimistic_gradient_descent"
    _validate.learning_rate(who, learning_rate)
    _validate.finite(who, "alpha", alpha)
    _validate.finite(who, "beta", beta)
    return chain(scale_by_optimistic_gradient(alpha, beta), scale_by_learning_rate(learning_rate))


def _adam_direction(who, b1, b2, eps, eps_root, mu_dtype, nesterov) -> GradientTransformation:
    _validate.boolean(who, "nesterov", nesterov)
    check_moments(who, b1, b2, eps, eps_root)
    _validate.dtype(who, "mu_dtype", mu_dtype)
    return scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov)


def optimistic_adam(
    learning_rate: float,
    optimism: float | None = None,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-08,
    eps_root: float = 0.0,
    mu_dtype: Any | None = None,
    *,
    nesterov: bool = True,
) -> GradientTransformation:
    """Optimistic Adam (Daskalakis et al., 2018), Optax's first ``optimistic_adam`` (which
    Optax deprecates for :func:`optimistic_adam_v2`): the optimistic step on Adam's direction
    ``a_t`` (Nesterov's by default), with the learning rate inside it.

    ::

        p <- p - ((lr + optimism) * a_t - optimism * a_{t-1}),    optimism = lr if None

    Args:
      learning_rate: ``lr`` (>= 0), a number (not a schedule, as in Optax).
      optimism: the weight of ``a_t - a_{t-1}`` (a number); ``None`` means ``lr``.
      b1, b2, eps, eps_root, mu_dtype: Adam's (see :func:`gradxform.scale_by_adam`).
      nesterov: Nesterov's form of Adam's first moment (Optax's ``scale_by_adam(nesterov=)``).

    Returns:
      ``chain(scale_by_adam, scale_by_optimistic_gradient(lr, optimism), scale(-1))``.

    References:
      Daskalakis et al., `Training GANs with Optimism <https://arxiv.org/abs/1711.00141>`_,
      2018.

    Example:
      The first step is ``-lr * a_1``, with ``a_0 = a_1 = (1 + b1 / (1 + b1)) sign(g)`` (Nesterov's
      Adam):

      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt, params = gx.optimistic_adam(0.1), {"w": jnp.array([1.0, -2.0])}
      >>> updates, _ = opt.update({"w": jnp.array([0.5, -4.0])}, opt.init(params), params)
      >>> [round(u, 4) for u in updates["w"].tolist()]
      [-0.1474, 0.1474]
    """
    who = "optimistic_adam"
    _validate.non_negative(who, "learning_rate", learning_rate)
    if optimism is not None:
        _validate.finite(who, "optimism", optimism)
    return chain(
        _adam_direction(who, b1, b2, eps, eps_root, mu_dtype, nesterov),
        scale_by_optimistic_gradient(
            learning_rate, learning_rate if optimism is None else optimism
        ),
        scale_by_learning_rate(1.0),
    )


def optimistic_adam_v2(
    learning_rate: ScalarOrSchedule,
    *,
    alpha: float = 1.0,
    beta: float = 1.0,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-08,
    eps_root: float = 0.0,
    mu_dtype: Any | None = None,
    nesterov: bool = True,
) -> GradientTransformation:
    """Optimistic Adam (Daskalakis et al., 2018), Optax's ``optimistic_adam_v2``: the optimistic
    step on Adam's direction ``a_t`` (Nesterov's by default), then the learning rate.

    ::

        p <- p - lr * ((alpha + beta) * a_t - beta * a_{t-1}),     a_0 = a_1

    Args:
      learning_rate: ``lr``, a number or a schedule.
      alpha, beta: see :func:`gradxform.scale_by_optimistic_gradient`.
      b1, b2, eps, eps_root, mu_dtype: Adam's (see :func:`gradxform.scale_by_adam`).
      nesterov: Nesterov's form of Adam's first moment.

    Returns:
      ``chain(scale_by_adam, scale_by_optimistic_gradient, scale_by_learning_rate)``.

    References:
      Daskalakis et al., `Training GANs with Optimism <https://arxiv.org/abs/1711.00141>`_,
      2018.

    Example:
      The first step is ``-lr * a_1``, with ``a_0 = a_1 = (1 + b1 / (1 + b1)) sign(g)`` (Nesterov's
      Adam):

      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt, params = gx.optimistic_adam_v2(0.1), {"w": jnp.array([1.0, -2.0])}
      >>> updates, _ = opt.update({"w": jnp.array([0.5, -4.0])}, opt.init(params), params)
      >>> [round(u, 4) for u in updates["w"].tolist()]
      [-0.1474, 0.1474]
    """
    who = "optimistic_adam_v2"
    _validate.learning_rate(who, learning_rate)
    _validate.finite(who, "alpha", alpha)
    _validate.finite(who, "beta", beta)
    return chain(
        _adam_direction(who, b1, b2, eps, eps_root, mu_dtype, nesterov),
        scale_by_optimistic_gradient(alpha, beta),
        scale_by_learning_rate(learning_rate),
    )
