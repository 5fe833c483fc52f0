"""Kronecker-factored preconditioners: Shampoo, as ``pytorch-optimizer``'s ``Shampoo``."""

from __future__ import annotations

from gradxform import _validate
from gradxform._base import GradientTransformation, chain
from gradxform._types import ScalarOrSchedule
from gradxform.optimizers._links import check_common, decay_link
from gradxform.transforms.scaling import scale, scale_by_learning_rate
from gradxform.transforms.shampoo_precondition import check_shampoo, shampoo_direction
from gradxform.wrappers.blocking import blocks_of


def shampoo(
    learning_rate: ScalarOrSchedule = 1e-3,
    *,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    weight_decouple: bool = False,
    fixed_decay: bool = False,
    preconditioning_compute_steps: int = 1,
    matrix_eps: float = 1e-6,
    block_size: int | None = None,
    stack_by_shape: bool = False,
) -> GradientTransformation:
    """Shampoo (Gupta, Koren & Singer, 2018), as ``pytorch_optimizer.Shampoo``.

    Every param of order ``n`` is preconditioned by one Kronecker factor per dimension (see
    :func:`gradxform.scale_by_shampoo`, whose ``u_t`` this is)::

        u_t = g_t x_0 L_0^{-1/(2n)} ... x_{n-1} L_{n-1}^{-1/(2n)},   L_i = eps I + sum G_(i) G_(i)^T
        p <- p - lr * u_t                                          (coupled or no decay)
        p <- p - lr * weight_decay * p - lr * u_t                  (weight_decouple)
        p <- p - weight_decay * p - lr * u_t                       (weight_decouple, fixed_decay)

    The coupled decay (the default kind) adds ``weight_decay * p`` to the gradient after the
    momentum mixes it and before the preconditioning, as the reference does. Optax 0.2.8 has no
    Shampoo, in its core or contrib.

    With ``block_size`` (Distributed Shampoo's blocking, not in the reference), every tensor of
    ``ndim >= 2`` with an axis longer than ``block_size`` is cut along each axis into blocks
    of at most ``block_size`` (:func:`gradxform.blocked_matrices`), each with its own factors,
    roots and momentum: the preconditioner becomes block-diagonal, its factors at most
    ``block_size`` square and its SVDs at most ``block_size^3`` each, where the whole matrix
    costs ``d^3`` per dimension ``d``. A block of order ``n`` keeps the exponent ``-1/(2n)``.
    Vectors are not cut: a vector of length ``d`` keeps its ``d x d`` factor.

    Args:
      learning_rate: ``lr``, a number or a schedule.
      momentum: the weight of the previous preconditioned direction, in [0, 1).
      weight_decay: the decay ``lambda`` (>= 0).
      weight_decouple: decay the params (AdamW's way) rather than the gradient.
      fixed_decay: with ``weight_decouple``, decay by ``weight_decay`` not scaled by ``lr``.
      preconditioning_compute_steps: recompute the inverse roots every this many steps (>= 1;
        an array, e.g. injected, runs the general program); the update is zero until the first
        computation, as in the reference.
      matrix_eps: the factors start from ``matrix_eps * I`` (>= 0).
      block_size: ``None`` (the default: the reference's whole tensors) or the longest axis of
        a block (a positive int), as above.
      stack_by_shape: keep same-shape leaves' (or blocks') state stacked and compute each
        shape once under ``vmap``, as :func:`gradxform.scale_by_shampoo`'s argument: the same
        numbers, compile time set by the number of distinct shapes, not of layers.

    Returns:
      ``chain(scale_by_shampoo, [add_decayed_weights], scale_by_learning_rate)``; with
      ``fixed_decay``, ``chain(scale_by_shampoo, scale_by_learning_rate(flip_sign=False),
      add_decayed_weights, scale(-1))``; with ``block_size``, ``scale_by_shampoo`` within
      ``blocked_matrices(..., block_size=block_size)``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt = gx.shampoo(0.1)
      >>> params = {"w": jnp.ones((3, 2)), "b": jnp.ones(2)}
      >>> updates, _ = opt.update(params, opt.init(params), params)
      >>> updates["w"].shape, updates["b"].shape
      ((3, 2), (2,))

    References:
      Gupta, Koren & Singer, `Shampoo: Preconditioned Stochastic Tensor Optimization
      <https://arxiv.org/abs/1802.09568>`_, ICML 2018.
    """
    who = "shampoo"
    check_common(who, learning_rate, weight_decay)
    _validate.boolean(who, "weight_decouple", weight_decouple)
    _validate.boolean(who, "fixed_decay", fixed_decay)
    check_shampoo(
        who, momentum, weight_decay, preconditioning_compute_steps, matrix_eps, stack_by_shape
    )
    coupled = 0.0 if weight_decouple else weight_decay
    direction = shampoo_direction(
        who, momentum, coupled, preconditioning_compute_steps, matrix_eps, stack_by_shape
    )
    if block_size is not None:
        _validate.count(who, "block_size", block_size)
        direction = blocks_of(who, direction, block_size)
    if not weight_decouple:
        return chain(direction, scale_by_learning_rate(learning_rate))
    if fixed_decay:
        return chain(
            direction,
            scale_by_learning_rate(learning_rate, flip_sign=False),
            *decay_link(who, weight_decay),
            scale(-1.0),
        )
    return chain(direction, *decay_link(who, weight_decay), scale_by_learning_rate(learning_rate))
