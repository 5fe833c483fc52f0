"""Gradient-descent variants from Optax's catalogue, with Optax's names, signatures and
numbers: noisy SGD, Polyak's step size, signSGD, Signum and SM3."""

from __future__ import annotations

from typing import Any

import jax

from gradxform import _validate
from gradxform._base import GradientTransformation, chain
from gradxform._types import ScalarOrSchedule
from gradxform.transforms.momentum import ema
from gradxform.transforms.noise import add_noise, as_key
from gradxform.transforms.polyak import VARIANTS, scale_by_polyak
from gradxform.transforms.scaling import scale, scale_by_learning_rate
from gradxform.transforms.sign import scale_by_sign
from gradxform.transforms.sm3 import scale_by_sm3


def noisy_sgd(
    learning_rate: ScalarOrSchedule,
    eta: float = 0.01,
    gamma: float = 0.55,
    key: jax.Array | int | None = None,
    *,
    seed: int | None = None,
) -> GradientTransformation:
    """SGD with annealed Gaussian gradient noise (Neelakantan et al., 2015), Optax's
    ``noisy_sgd``: given the same ``key``, the same numbers as Optax.

    ::

        p <- p - lr * (g_t + sqrt(eta / t^gamma) * N(0, 1))

    Args:
      learning_rate: ``lr``, a number or a schedule.
      eta: the noise's initial variance (>= 0).
      gamma: the variance's decay exponent.
      key: a JAX random key or an int seed; ``None`` means ``0`` (as Optax takes it).
      seed: Optax's deprecated name for an int ``key`` (not both).

    Returns:
      ``chain(add_noise(eta, gamma, key), scale_by_learning_rate)``; the noise's state is
      :class:`gradxform.AddNoiseState`.

    References:
      Neelakantan et al., `Adding Gradient Noise Improves Learning for Very Deep Networks
      <https://arxiv.org/abs/1511.06807>`_, 2015.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> params, grads = {"w": jnp.ones(2)}, {"w": jnp.array([0.5, -4.0])}
      >>> opt = gx.noisy_sgd(0.1, eta=0.0)  # no noise: plain SGD
      >>> [round(u, 4) for u in opt.update(grads, opt.init(params))[0]["w"].tolist()]
      [-0.05, 0.4]
      >>> opt = gx.noisy_sgd(0.1, eta=0.01, key=0)  # noise of std sqrt(0.01 / 1^0.55) = 0.1
      >>> bool((opt.update(grads, opt.init(params))[0]["w"] != jnp.array([-0.05, 0.4])).all())
      True
    """
    who = "noisy_sgd"
    _validate.learning_rate(who, learning_rate)
    _validate.non_negative(who, "eta", eta)
    _validate.non_negative(who, "gamma", gamma)
    if seed is not None:
        if key is not None:
            raise ValueError(f"{who}: give `key` or `seed` (deprecated), not both")
        _validate.count(who, "seed", seed, minimum=0, maximum=2**63 - 1)
        key = seed
    as_key(who, 0 if key is None else key)  # the key's kind, checked under this name
    return chain(add_noise(eta, gamma, key), scale_by_learning_rate(learning_rate))


def polyak_sgd(
    max_learning_rate: float = 1.0,
    scaling: ScalarOrSchedule = 1.0,
    f_min: float = 0.0,
    eps: float = 0.0,
    variant: str = "sps",
) -> GradientTransformation:
    """SGD with Polyak's step size (Loizou et al., 2021), Optax's ``polyak_sgd``; its
    ``update`` needs ``value=``, the loss at the params.

    ::

        p <- p - scaling * min((f(p) - f_min) / (||g||^2 + eps), max_learning_rate) * g

    Args:
      max_learning_rate: the largest step (>= 0).
      scaling: a factor of the step (>= 0), a number or a schedule.
      f_min, eps, variant: see :func:`gradxform.scale_by_polyak`.

    Returns:
      ``chain(scale_by_learning_rate(scaling), scale_by_polyak)``.

    References:
      Loizou et al., `Stochastic Polyak Step-size for SGD: An Adaptive Learning Rate for Fast
      Convergence <https://arxiv.org/abs/2002.10542>`_, 2021.

    Example:
      The step is ``-min((f - f_min) / ||g||^2, 1) * g = -0.2 * g``:

      >>> import jax, jax.numpy as jnp, gradxform as gx
      >>> opt, params = gx.polyak_sgd(), {"w": jnp.array([1.0, -2.0])}
      >>> grads, state = {"w": jnp.array([3.0, 4.0])}, opt.init(params)
      >>> updates, _ = jax.jit(opt.update)(grads, state, params, value=jnp.array(5.0))
      >>> [round(u, 4) for u in updates["w"].tolist()]
      [-0.6, -0.8]
    """
    who = "polyak_sgd"
    _validate.non_negative(who, "max_learning_rate", max_learning_rate)
    _validate.learning_rate(who, scaling, "scaling")
    _validate.finite(who, "f_min", f_min)
    _validate.non_negative(who, "eps", eps)
    _validate.choice(who, "variant", variant, VARIANTS)
    return chain(
        scale_by_learning_rate(scaling),
        scale_by_polyak(f_min, max_learning_rate, eps, variant),
    )


def sign_sgd(learning_rate: ScalarOrSchedule) -> GradientTransformation:
    """signSGD (Bernstein et al., 2018), Optax's ``sign_sgd``.

    ::

        p <- p - lr * sign(g_t)

    Args:
      learning_rate: ``lr``, a number or a schedule.

    Returns:
      ``chain(sign, scale_by_learning_rate)``.

    References:
      Bernstein et al., `signSGD: Compressed Optimisation for Non-Convex Problems
      <https://arxiv.org/abs/1802.04434>`_, 2018.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt, params = gx.sign_sgd(0.1), {"w": jnp.array([1.0, -2.0])}
      >>> updates, _ = opt.update({"w": jnp.array([0.5, -4.0])}, opt.init(params), params)
      >>> [round(u, 4) for u in updates["w"].tolist()]  # -lr * sign(g)
      [-0.1, 0.1]
    """
    _validate.learning_rate("sign_sgd", learning_rate)
    return chain(scale_by_sign(), scale_by_learning_rate(learning_rate))


def signum(
    learning_rate: ScalarOrSchedule, beta: float = 0.9, accumulator_dtype: Any | None = None
) -> GradientTransformation:
    """Signum (Bernstein et al., 2018), Optax's ``signum``: the sign of the momentum.

    ::

        m_t = beta * m_{t-1} + (1 - beta) * g_t,   p <- p - lr * sign(m_t)

    Args:
      learning_rate: ``lr``, a number or a schedule.
      beta: the momentum's decay, in [0, 1].
      accumulator_dtype: dtype of the momentum; by default each param's dtype.

    Returns:
      ``chain(ema(beta, debias=False), sign, scale_by_learning_rate)``.

    References:
      Bernstein et al., `signSGD: Compressed Optimisation for Non-Convex Problems
      <https://arxiv.org/abs/1802.04434>`_, 2018.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt, params = gx.signum(0.1), {"w": jnp.array([1.0, -2.0])}
      >>> updates, _ = opt.update({"w": jnp.array([0.5, -4.0])}, opt.init(params), params)
      >>> [round(u, 4) for u in updates["w"].tolist()]  # -lr * sign((1 - beta) g)
      [-0.1, 0.1]
    """
    who = "signum"
    _validate.learning_rate(who, learning_rate)
    _validate.probability(who, "beta", beta, closed=True)
    _validate.dtype(who, "accumulator_dtype", accumulator_dtype)
    return chain(
        ema(beta, debias=False, accumulator_dtype=accumulator_dtype),
        scale_by_sign(),
        scale_by_learning_rate(learning_rate),
    )


def sm3(learning_rate: float, momentum: float = 0.9) -> GradientTransformation:
    """SM3 (Anil et al., 2019), Optax's ``sm3``.

    ::

        p <- p - lr * m_t        (m_t: see :func:`gradxform.scale_by_sm3`)

    Args:
      learning_rate: ``lr`` (>= 0), a number (not a schedule, as in Optax).
      momentum: the momentum's decay, in [0, 1).

    Returns:
      ``chain(scale_by_sm3(momentum), scale(-learning_rate))``.

    References:
      Anil et al., `Memory-Efficient Adaptive Optimization for Large-Scale Learning
      <https://arxiv.org/abs/1901.11150>`_, 2019.

    Example:
      With ``m_1 = (1 - momentum) g / |g|`` the first step is ``-lr * 0.1 * sign(g)``:

      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt, params = gx.sm3(0.1), {"w": jnp.array([1.0, -2.0])}
      >>> updates, _ = opt.update({"w": jnp.array([0.5, -4.0])}, opt.init(params), params)
      >>> [round(u, 4) for u in updates["w"].tolist()]
      [-0.01, 0.01]
    """
    who = "sm3"
    _validate.non_negative(who, "learning_rate", learning_rate)
    _validate.probability(who, "momentum", momentum)
    return chain(scale_by_sm3(momentum), scale(-learning_rate))
