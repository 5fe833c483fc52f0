"""Low-rank optimizers: GaLore, as its authors' ``galore-torch`` (:func:`galore_adamw`) and as
``optax.contrib.galore`` (:func:`galore`), each a ``chain`` of the projection of
:mod:`gradxform.transforms.galore` around an Adam, a learning rate and a weight decay."""

from __future__ import annotations

from typing import Any

from gradxform import _validate
from gradxform._base import GradientTransformation, chain
from gradxform._types import MaskOrFn, ScalarOrSchedule
from gradxform.optimizers._links import check_common, decay_link, optional
from gradxform.transforms.adam import check_moments
from gradxform.transforms.adam_variants import scale_by_adam_raw_eps
from gradxform.transforms.galore import (
    check_galore,
    galore_projection,
    scale_by_galore,
)
from gradxform.transforms.scaling import scale_by_learning_rate
from gradxform.transforms.stepped_decay import decay_before_learning_rate


def galore_adamw(
    learning_rate: ScalarOrSchedule,
    *,
    rank: int = 128,
    update_proj_gap: int = 200,
    scale: float = 0.25,
    proj_type: str = "std",
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    projected: MaskOrFn = None,
    stack_by_shape: bool = False,
) -> GradientTransformation:
    """GaLore AdamW (Zhao et al., 2024), as ``galore_torch.GaLoreAdamW``.

    Every projected matrix ``G_t`` (by default every 2-D leaf) is projected with ``P`` from the
    float32 SVD of ``G_t`` at the steps ``t % update_proj_gap == 0`` (``t = 0`` included; see
    :func:`gradxform.scale_by_galore`): with ``proj_type="std"`` on the right, ``R_t = G_t
    V_r`` (``m x r``), when ``m >= n``, else on the left, ``R_t = U_r^T G_t``. Adam runs in
    the projected space, the bias corrections in the step size::

        m_t = b1 m_{t-1} + (1 - b1) R_t,   v_t = b2 v_{t-1} + (1 - b2) R_t^2
        p' = p - lr * sqrt(1 - b2^t) / (1 - b1^t) * scale * back(m_t / (sqrt(v_t) + eps))
        p <- p' - lr * weight_decay * p'                     (decay after the step)

    with ``back(N) = N V_r^T`` (right) or ``U_r N`` (left). Other leaves get the same Adam on
    their own gradients (``R_t = G_t``, ``back`` and ``scale`` left out), as the reference's
    param groups without a ``rank``.

    Args:
      learning_rate: ``lr``, a number or a schedule.
      rank: the projection's rank (capped by each matrix's dimensions).
      update_proj_gap: steps between recomputations of the projectors (>= 1).
      scale: the factor ``alpha`` on the projected-back update (the reference's 0.25).
      proj_type: ``"std"``, ``"reverse_std"``, ``"right"``, ``"left"`` or ``"full"``.
      b1, b2: Adam's decays, in [0, 1).
      eps: added to ``sqrt(v_t)`` (>= 0; the reference's 1e-6).
      weight_decay: decay of the new params after the step (>= 0).
      projected: which leaves to project (a tree of bools or a function of the params);
        ``None`` projects every 2-D leaf.
      stack_by_shape: keep the projectors of same-shape projected leaves stacked and compute
        each group under one ``vmap`` (the same numbers; compile time set by the number of
        distinct shapes, not of leaves): see :func:`gradxform.scale_by_galore`.

    Returns:
      ``chain(scale_by_galore(base_optimizer=scale_by_adam_raw_eps), decay (before the rate),
      scale_by_learning_rate)``, the decay link a static 0 leaves out.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt = gx.galore_adamw(1e-2, rank=2, update_proj_gap=50)
      >>> params = {"w": jnp.ones((8, 4)), "b": jnp.zeros(4)}
      >>> state = opt.init(params)
      >>> updates, state = opt.update({"w": jnp.eye(8, 4), "b": jnp.ones(4)}, state, params)
      >>> updates["w"].shape
      (8, 4)

    References:
      Zhao et al., `GaLore: Memory-Efficient LLM Training by Gradient Low-Rank Projection
      <https://arxiv.org/abs/2403.03507>`_, ICML 2024.
    """
    who = "galore_adamw"
    check_common(who, learning_rate, weight_decay)
    check_galore(who, rank, update_proj_gap, scale, proj_type, projected, stack_by_shape)
    check_moments(who, b1, b2, eps)
    base = scale_by_adam_raw_eps(b1, b2=b2, eps=eps)
    return chain(
        galore_projection(
            who, rank, update_proj_gap, scale, base, proj_type, projected, stack_by_shape
        ),
        *optional(
            not _validate.is_static_zero(weight_decay),
            decay_before_learning_rate(learning_rate, weight_decay, who=who),
        ),
        scale_by_learning_rate(learning_rate),
    )


def galore(
    learning_rate: ScalarOrSchedule,
    rank: int = 128,
    update_proj_gap: int = 200,
    scale: float = 1.0,
    base_optimizer: GradientTransformation | None = None,
    weight_decay: Any = 0.0,
    mask: MaskOrFn = None,
    weight_dimension_numbers: None = None,
    *,
    stack_by_shape: bool = False,
) -> GradientTransformation:
    """GaLore as ``optax.contrib.galore``: the projection of :func:`gradxform.scale_by_galore`
    with Optax's side (a matrix with ``m >= n`` on the left), around ``base_optimizer``
    (``scale_by_adam()``: ``eps`` outside the corrected root), decoupled decay before the
    learning rate::

        p <- p - lr * (scale * back(base_optimizer(R_t)) + weight_decay * p)

    See :func:`galore_adamw` for the authors' numbers (other side, ``eps`` on the raw root,
    decay after the step, ``scale=0.25``).

    Args:
      learning_rate: a number or a schedule.
      rank, update_proj_gap, scale, base_optimizer, weight_dimension_numbers: as in
        :func:`gradxform.scale_by_galore`.
      weight_decay: decoupled weight decay (>= 0).
      mask: which leaves to decay (a tree of bools or a function of the params).
      stack_by_shape: as in :func:`gradxform.scale_by_galore` (keyword only).

    Returns:
      ``chain(scale_by_galore, add_decayed_weights, scale_by_learning_rate)``.

    Example:
      A rank-1 gradient lies in the rank-1 projection, so the step is Adam's first,
      ``-lr * sign(g)``, on the one row it touches:

      >>> import jax, jax.numpy as jnp, gradxform as gx
      >>> opt, params = gx.galore(0.1, rank=1), {"w": jnp.zeros((3, 2))}
      >>> grads = {"w": jnp.array([[3.0, 4.0], [0.0, 0.0], [0.0, 0.0]])}
      >>> updates, _ = jax.jit(opt.update)(grads, opt.init(params), params)  # one compile
      >>> [round(u, 4) for u in updates["w"][0].tolist()], float(jnp.abs(updates["w"][1:]).max())
      ([-0.1, -0.1], 0.0)
    """
    who = "galore"
    check_common(who, learning_rate, weight_decay)
    _validate.mask(who, "mask", mask)
    _validate.boolean(who, "stack_by_shape", stack_by_shape)
    return chain(
        scale_by_galore(
            rank,
            update_proj_gap,
            scale,
            base_optimizer,
            weight_dimension_numbers,
            stack_by_shape=stack_by_shape,
        ),
        *decay_link(who, weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )
