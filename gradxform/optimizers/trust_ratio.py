"""Layer-wise trust-ratio optimizers from Optax's catalogue, with Optax's numbers: LAMB, LARS
and Fromage."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from gradxform import _validate
from gradxform._base import GradientTransformation, chain
from gradxform._types import MaskOrFn, ScalarOrSchedule
from gradxform.optimizers._links import check_common, decay_link
from gradxform.transforms.adam import check_moments, scale_by_adam
from gradxform.transforms.momentum import trace
from gradxform.transforms.scaling import scale_by_learning_rate
from gradxform.transforms.trust_ratio import add_scaled_params, scale_by_trust_ratio
from gradxform.wrappers.masking import masked


def lamb(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    eps_root: float = 0.0,
    weight_decay: float = 0.0,
    mask: MaskOrFn = None,
) -> GradientTransformation:
    """LAMB (You et al., 2020): Adam's direction with decoupled decay, scaled per layer by its
    trust ratio; Optax's ``lamb``.

    ::

        d_t = m_hat_t / (sqrt(v_hat_t + eps_root) + eps) + weight_decay * p     (Adam's moments)
        p <- p - lr * (||p|| / ||d_t||) * d_t                      (norms per leaf; 1 if one is 0)

    Args:
      learning_rate: ``lr``, a number or a schedule.
      b1, b2, eps, eps_root: Adam's (see :func:`gradxform.scale_by_adam`).
      weight_decay: the decoupled decay (>= 0).
      mask: which leaves to decay (see :func:`gradxform.add_decayed_weights`).

    Returns:
      ``chain(scale_by_adam, add_decayed_weights, scale_by_trust_ratio,
      scale_by_learning_rate)``.

    References:
      You et al., `Large Batch Optimization for Deep Learning: Training BERT in 76 minutes
      <https://arxiv.org/abs/1904.00962>`_, 2020.

    Example:
      The first step is ``-lr * ||p|| / ||d|| * d`` with ``d = sign(g)``, ``0.1 * sqrt(5 / 2)``:

      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt, params = gx.lamb(0.1), {"w": jnp.array([1.0, -2.0])}
      >>> updates, _ = opt.update({"w": jnp.array([0.5, -4.0])}, opt.init(params), params)
      >>> [round(u, 4) for u in updates["w"].tolist()]
      [-0.1581, 0.1581]
    """
    who = "lamb"
    check_common(who, learning_rate, weight_decay)
    check_moments(who, b1, b2, eps, eps_root)
    _validate.mask(who, "mask", mask)
    return chain(
        scale_by_adam(b1, b2, eps, eps_root),
        *decay_link(who, weight_decay, mask),
        scale_by_trust_ratio(),
        scale_by_learning_rate(learning_rate),
    )


def _check_flag_mask(who: str, name: str, value: Any) -> None:
    """A mask that must be given (True, False, a tree of bools or a function): not ``None``."""
    if value is None:
        raise TypeError(
            f"{who}: `{name}` must be True, False, a tree of bools or a function of the params "
            "returning one, got None"
        )
    _validate.mask(who, name, value)


def _masked_unless_true(transform: GradientTransformation, mask: Any) -> GradientTransformation:
    return transform if mask is True else masked(transform, mask)


def lars(
    learning_rate: ScalarOrSchedule,
    weight_decay: float = 0.0,
    weight_decay_mask: MaskOrFn = True,
    trust_coefficient: float = 0.001,
    eps: float = 0.0,
    trust_ratio_mask: MaskOrFn = True,
    momentum: float = 0.9,
    nesterov: bool = False,
) -> GradientTransformation:
    """LARS (You et al., 2017), Optax's ``lars``: the trust ratio before the learning rate,
    momentum after it.

    ::

        d_t = g_t + weight_decay * p
        d_t <- trust_coefficient * ||p|| / (||d_t|| + eps) * d_t          (per leaf; 1 if 0)
        b_t = momentum * b_{t-1} - lr * d_t,   p <- p + b_t   (Nesterov: p <- p + momentum * b_t
                                                                - lr * d_t)

    Args:
      learning_rate: ``lr``, a number or a schedule.
      weight_decay: the L2 decay added to the gradient (>= 0).
      weight_decay_mask: which leaves to decay: ``True`` (all), ``False``, a tree of bools or a
        function of the params returning one.
      trust_coefficient: LARS's ``eta``.
      eps: added to the update's norm (>= 0).
      trust_ratio_mask: which leaves get the trust ratio, as ``weight_decay_mask``.
      momentum: the momentum (>= 0).
      nesterov: Nesterov's momentum.

    Returns:
      ``chain(add_decayed_weights, masked(scale_by_trust_ratio), scale_by_learning_rate,
      trace)``.

    References:
      You et al., `Large Batch Training of Convolutional Networks
      <https://arxiv.org/abs/1708.03888>`_, 2017.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt, params = gx.lars(0.1, trust_coefficient=0.1), {"w": jnp.array([3.0, 4.0])}
      >>> updates, _ = opt.update({"w": jnp.array([0.6, 0.8])}, opt.init(params), params)
      >>> [round(u, 4) for u in updates["w"].tolist()]  # -lr * 0.1 * ||p|| / ||g|| * g
      [-0.03, -0.04]
    """
    who = "lars"
    check_common(who, learning_rate, weight_decay)
    _check_flag_mask(who, "weight_decay_mask", weight_decay_mask)
    _check_flag_mask(who, "trust_ratio_mask", trust_ratio_mask)
    _validate.finite(who, "trust_coefficient", trust_coefficient)
    _validate.non_negative(who, "eps", eps)
    _validate.non_negative(who, "momentum", momentum)
    _validate.boolean(who, "nesterov", nesterov)
    decay_mask = None if weight_decay_mask is True else weight_decay_mask
    return chain(
        *decay_link(who, weight_decay, decay_mask),
        _masked_unless_true(
            scale_by_trust_ratio(trust_coefficient=trust_coefficient, eps=eps), trust_ratio_mask
        ),
        scale_by_learning_rate(learning_rate),
        trace(momentum, nesterov),
    )


def fromage(learning_rate: float, min_norm: float = 1e-6) -> GradientTransformation:
    """Fromage (Bernstein et al., 2020), Optax's ``fromage``: a step of relative size ``lr`` per
    layer, then a shrink that keeps the weights' norm from growing.

    ::

        p <- (p - lr * (||p|| / ||g||) * g) / sqrt(1 + lr^2)       (norms per leaf, >= min_norm)

    Args:
      learning_rate: ``lr`` (>= 0), a number (the shrink depends on it; Optax also takes a
        schedule, which this form does not).
      min_norm: the floor of both norms (>= 0).

    Returns:
      ``chain(scale_by_trust_ratio, scale_by_learning_rate, u + (1/sqrt(1 + lr^2) - 1) p)``.

    References:
      Bernstein et al., `On the distance between two neural networks and the stability of
      learning <https://arxiv.org/abs/2002.03432>`_, 2020.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt, params = gx.fromage(0.1), {"w": jnp.array([3.0, 4.0])}
      >>> updates, _ = opt.update({"w": jnp.array([0.6, 0.8])}, opt.init(params), params)
      >>> new = gx.apply_updates(params, updates)["w"]
      >>> [round(x, 4) for x in new.tolist()]  # (p - lr * ||p|| / ||g|| * g) / sqrt(1 + lr^2)
      [2.6866, 3.5821]
    """
    who = "fromage"
    _validate.non_negative(who, "learning_rate", learning_rate)
    _validate.non_negative(who, "min_norm", min_norm)
    # sqrt, not ** 0.5: correctly rounded both for a Python number and for an (injected) array,
    # so that the two give the same bits.
    if _validate.is_static_number(learning_rate):
        shrink: float | jax.Array = 1 / math.sqrt(1 + learning_rate * learning_rate)
    else:
        shrink = 1 / jnp.sqrt(1 + learning_rate * learning_rate)
    return chain(
        scale_by_trust_ratio(min_norm),
        scale_by_learning_rate(learning_rate * shrink),
        add_scaled_params(shrink - 1, who),
    )
