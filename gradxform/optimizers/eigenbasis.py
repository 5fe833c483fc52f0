"""SOAP, as ``pytorch-optimizer``'s ``SOAP``: Adam in the eigenbasis of Shampoo's factors."""

from __future__ import annotations

from gradxform import _validate
from gradxform._base import GradientTransformation, chain
from gradxform._types import ScalarOrSchedule
from gradxform.optimizers._links import check_common, optional
from gradxform.transforms.scaling import scale_by_learning_rate
from gradxform.transforms.soap_precondition import check_soap, soap_direction
from gradxform.transforms.stepped_decay import decayed_after_step
from gradxform.wrappers.blocking import blocks_of


def soap(
    learning_rate: ScalarOrSchedule = 3e-3,
    *,
    b1: float = 0.95,
    b2: float = 0.95,
    shampoo_beta: float = -1.0,
    eps: float = 1e-8,
    weight_decay: float = 0.01,
    precondition_frequency: int = 10,
    max_precond_dim: int = 10000,
    merge_dims: bool = False,
    precondition_1d: bool = False,
    normalize_grads: bool = False,
    correct_bias: bool = True,
    block_size: int | None = None,
    stack_by_shape: bool = False,
) -> GradientTransformation:
    """SOAP (Vyas et al., 2024), as ``pytorch_optimizer.SOAP``: Adam in Shampoo's eigenbasis.

    With ``D_t`` the direction of :func:`gradxform.scale_by_soap` (Adam's step in the
    eigenbasis ``Q_L, Q_R`` of the Kronecker factors ``L = E[G G^T]``, ``R = E[G^T G]``,
    refreshed every ``precondition_frequency`` steps by a power-iteration step and a QR),
    ``k = t - 1``::

        p <- p - lr * sqrt(1 - b2^k) / (1 - b1^k) * D_t        (without correct_bias: lr * D_t)
        p <- (1 - lr * weight_decay) p                          (after the step, as the reference)

    The first step gathers the factors and their eigenvectors and leaves the params as they are
    (no decay either). An axis longer than ``max_precond_dim`` gets no factor; vectors get one
    only with ``precondition_1d`` (else they follow Adam); scalars follow Adam. The bases'
    QR runs in the factors' dtype (float64 for float64 params); the reference rounds it through
    float32. Where ``merge_dims`` would merge a whole leaf into one axis, the reference fails
    (it reshapes to ``(1,)``); here the axis keeps the leaf's size.

    With ``block_size`` (Distributed Shampoo's blocking, not in the reference), every tensor of
    ``ndim >= 2`` with an axis longer than ``block_size`` is cut along each axis into blocks
    of at most ``block_size`` (:func:`gradxform.blocked_matrices`), and each block gets its own
    factors, bases and moments: a block-diagonal approximation of the whole factors, whose
    ``eigh`` and QR cost at most ``block_size^3`` each, where without blocking an axis longer
    than ``max_precond_dim`` gets no factor at all. The longest axis that gets a factor is
    then ``min(max_precond_dim, block_size)``, so no factor, merged axes included, is larger
    than ``block_size`` square; ``normalize_grads`` divides each block by its own rms. Vectors
    are not cut (with ``precondition_1d``, one longer than that bound follows Adam).
    ``soap(max_precond_dim=n, block_size=n)`` gives every large matrix blocks of at most
    ``max_precond_dim``, as Distributed Shampoo's ``max_preconditioner_dim`` does.

    Args:
      learning_rate: ``lr``, a number or a schedule.
      b1: the first moment's decay, in [0, 1).
      b2: the second moment's decay, in [0, 1).
      shampoo_beta: the factors' decay, < 1; negative (the default -1) means ``b2``.
      eps: added to ``sqrt(v)``, >= 0.
      weight_decay: decoupled decay after the step, ``p <- (1 - lr wd) p`` (>= 0).
      precondition_frequency: steps between refreshes of the bases.
      max_precond_dim: the longest axis that gets a factor.
      merge_dims: merge consecutive small axes first (at most ``max_precond_dim`` long).
      precondition_1d: give vectors a factor too.
      normalize_grads: divide the direction by its rms (+ eps).
      correct_bias: Adam's bias correction.
      block_size: ``None`` (the default: the reference's whole matrices) or the longest axis
        of a block (a positive int), as above.
      stack_by_shape: keep same-shape leaves' (or blocks') state stacked and compute each
        shape once under ``vmap``, as :func:`gradxform.scale_by_soap`'s argument: the same
        numbers, compile time set by the number of distinct shapes, not of layers.

    Returns:
      ``chain(scale_by_soap, scale_by_learning_rate, decay_after_step)``; with ``block_size``,
      the direction is ``blocked_matrices(scale_by_soap(...), block_size=block_size)``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt = gx.soap(1e-2, precondition_frequency=2)
      >>> params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
      >>> state = opt.init(params)
      >>> u, state = opt.update(params, state, params)
      >>> float(jnp.abs(u["w"]).max())  # the first step gathers statistics
      0.0

    References:
      Vyas et al., `SOAP: Improving and Stabilizing Shampoo using Adam
      <https://arxiv.org/abs/2409.11321>`_, 2024.
    """
    who = "soap"
    args = (b1, b2, shampoo_beta, eps, precondition_frequency, max_precond_dim)
    flags = (merge_dims, precondition_1d, normalize_grads, correct_bias, stack_by_shape)
    check_common(who, learning_rate, weight_decay)
    check_soap(who, *args, *flags)
    if block_size is None:
        direction = soap_direction(who, *args, *flags)
    else:
        _validate.count(who, "block_size", block_size)
        # A block's axes are at most block_size, but merge_dims could merge them into a longer
        # one: the bound on a factor is the smaller of the two.
        args = (*args[:-1], min(max_precond_dim, block_size))
        direction = blocks_of(who, soap_direction(who, *args, *flags), block_size)
    return chain(
        direction,
        scale_by_learning_rate(learning_rate),
        *optional(
            not _validate.is_static_zero(weight_decay),
            decayed_after_step(who, learning_rate, weight_decay, True),
        ),
    )
