"""Muon, as ``torch.optim.Muon``, and the usual recipe: Muon for the hidden matrices, AdamW for
every other leaf."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from gradxform import _masks, _validate
from gradxform._base import GradientTransformation, GradientTransformationExtraArgs
from gradxform._types import ScalarOrSchedule
from gradxform.optimizers._links import check_common, decay_link, torch_optimizer
from gradxform.optimizers.adam_family import adamw
from gradxform.transforms.muon import (
    ADJUST_LR_FNS,
    NS_COEFFICIENTS,
    adjust_by_shape,
    check_newton_schulz,
    muon_direction,
    muon_labels,
)
from gradxform.transforms.scaling import scale_by_learning_rate
from gradxform.wrappers.groups import multi_transform

BFLOAT16 = jnp.dtype(jnp.bfloat16)


def _check_muon(
    who: str,
    learning_rate: Any,
    weight_decay: Any,
    momentum: Any,
    nesterov: Any,
    ns_coefficients: Any,
    eps: Any,
    ns_steps: Any,
    adjust_lr_fn: Any,
    ns_dtype: Any,
) -> None:
    check_common(who, learning_rate, weight_decay)
    _validate.probability(who, "momentum", momentum)
    _validate.boolean(who, "nesterov", nesterov)
    check_newton_schulz(who, "ns_coefficients", ns_coefficients, ns_steps, eps, ns_dtype)
    _validate.choice(who, "adjust_lr_fn", adjust_lr_fn, ADJUST_LR_FNS)


def muon(
    learning_rate: ScalarOrSchedule = 1e-3,
    *,
    weight_decay: float = 0.1,
    momentum: float = 0.95,
    nesterov: bool = True,
    ns_coefficients: Sequence[float] = NS_COEFFICIENTS,
    eps: float = 1e-7,
    ns_steps: int = 5,
    adjust_lr_fn: str | None = None,
    ns_dtype: Any | None = BFLOAT16,
    maximize: bool = False,
    stack_by_shape: bool = False,
) -> GradientTransformation:
    """Muon (Jordan et al., 2024), as ``torch.optim.Muon``: orthogonalised momentum.

    For each matrix ``p`` of shape ``(A, B)``, with ``O = NS(v)`` the Newton-Schulz iteration
    of :func:`gradxform.scale_by_muon` (``torch_arithmetic=True``)::

        m_t = m_{t-1} + (1 - momentum) (g_t - m_{t-1})
        v_t = g_t + momentum (m_t - g_t)                 if nesterov   else   m_t
        p <- p - lr * weight_decay * p - lr * s(A, B) * NS(v_t)

    with ``s = max(1, A / B) ** 0.5`` (``adjust_lr_fn=None`` or ``"original"``) or
    ``s = 0.2 * max(A, B) ** 0.5`` (``"match_rms_adamw"``). The momentum is the exponential
    average torch's code keeps (``buf.lerp_(grad, 1 - momentum)``), not the sum its docstring
    shows. As in torch, the iteration runs in bfloat16 (``ns_dtype``): each matrix product is
    summed in float32 and rounded once, which gives torch's numbers on CPU. Pass
    ``ns_dtype=None`` to run it in the params' compute dtype (float32, or float64 with x64),
    or ``jnp.float32``.

    Every param must be a matrix, as in torch; :func:`muon_with_adamw` gives the other leaves
    AdamW. Complex matrices, which torch refuses, are seen as (real, imaginary) pairs of real
    matrices, each orthogonalised on its own, as every torch-named optimizer here sees them.

    Args:
      learning_rate: ``lr``, a number or a schedule.
      weight_decay: decoupled decay, ``p <- (1 - lr * weight_decay) p`` (>= 0).
      momentum: the momentum's decay, in [0, 1).
      nesterov: orthogonalise Nesterov's look-ahead ``v_t`` rather than the momentum.
      ns_coefficients: the quintic's ``(a, b, c)``.
      eps: the floor of the norm that scales the matrix before the iteration (>= 0).
      ns_steps: Newton-Schulz iterations, in [0, 99] (torch's bound).
      adjust_lr_fn: ``None``/``"original"`` or ``"match_rms_adamw"``, as above.
      ns_dtype: dtype of the iteration: bfloat16 (torch's), float32, or ``None`` for the
        compute dtype.
      maximize: ascend the objective instead (the gradient is negated first).
      stack_by_shape: keep the momentum of same-shape matrices stacked and run each shape's
        iteration once under ``vmap``, as :func:`gradxform.scale_by_muon`'s argument: the
        same numbers, compile time set by the number of distinct shapes, not of layers.

    Returns:
      ``chain(scale_by_muon, adjust_by_shape, add_decayed_weights, scale_by_learning_rate)``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt = gx.muon(0.02)
      >>> params = {"w": jnp.ones((4, 2))}
      >>> updates, _ = opt.update({"w": jnp.eye(4, 2)}, opt.init(params), params)
      >>> updates["w"].shape
      (4, 2)

    References:
      Jordan et al., `Muon: An optimizer for hidden layers in neural networks
      <https://kellerjordan.github.io/posts/muon/>`_, 2024; Liu et al., `Muon is Scalable for
      LLM Training <https://arxiv.org/abs/2502.16982>`_, 2025.
    """
    who = "muon"
    _validate.boolean(who, "stack_by_shape", stack_by_shape)
    _check_muon(
        who,
        learning_rate,
        weight_decay,
        momentum,
        nesterov,
        ns_coefficients,
        eps,
        ns_steps,
        adjust_lr_fn,
        ns_dtype,
    )
    direction = muon_direction(
        who,
        ns_coefficients,
        ns_steps,
        momentum,
        eps,
        None,
        nesterov=nesterov,
        ns_dtype=ns_dtype,
        torch_arithmetic=True,
        stack_by_shape=stack_by_shape,
    )
    return torch_optimizer(
        who,
        direction,
        adjust_by_shape(who, adjust_lr_fn),
        *decay_link(who, weight_decay),
        scale_by_learning_rate(learning_rate),
        maximize=maximize,
    )


def _grouped(
    groups: Mapping[Hashable, GradientTransformation], labels: Callable[[Any], Any]
) -> Callable[[Any], GradientTransformation]:
    """``multi_transform`` over the groups that label some leaf of a tree: a model without
    matrices is all AdamW, a model of matrices only all Muon."""

    def build(tree):
        present = set(jax.tree.leaves(labels(tree)))
        used = {name: t for name, t in groups.items() if name in present}
        return multi_transform(used or groups, labels)

    return build


def muon_with_adamw(
    learning_rate: ScalarOrSchedule = 1e-3,
    *,
    weight_decay: float = 0.1,
    momentum: float = 0.95,
    nesterov: bool = True,
    ns_coefficients: Sequence[float] = NS_COEFFICIENTS,
    eps: float = 1e-7,
    ns_steps: int = 5,
    adjust_lr_fn: str | None = None,
    ns_dtype: Any | None = BFLOAT16,
    adamw_learning_rate: ScalarOrSchedule | None = None,
    adamw_b1: float = 0.9,
    adamw_b2: float = 0.999,
    adamw_eps: float = 1e-8,
    adamw_weight_decay: float = 1e-2,
    labels: Callable[[Any], Any] | None = None,
    maximize: bool = False,
    stack_by_shape: bool = False,
) -> GradientTransformation:
    """The usual recipe: :func:`muon` for the hidden matrices, :func:`adamw` for the rest.

    ::

        u_i = muon(...)(g restricted to the "muon" leaves)_i     where labels(params)_i = "muon"
        u_i = adamw(...)(g restricted to the "adamw" leaves)_i   where it is "adamw"

    The same as two ``torch.optim`` optimizers, ``Muon`` over the hidden matrices and
    ``AdamW`` over the other params, stepped together. By default :func:`muon_labels` decides:
    matrices go to Muon unless a key on their path names an embedding or a head; vectors,
    scalars, other ranks, embeddings and heads go to AdamW. Built on
    :func:`gradxform.multi_transform`; a group that labels no leaf is left out, so a model
    without matrices is trained by AdamW alone.

    Muon needs the matrices themselves: flat buffers (:func:`gradxform.flatten_params`) are
    vectors, which the default labels send to AdamW.

    Args:
      learning_rate: Muon's ``lr``, a number or a schedule.
      weight_decay, momentum, nesterov, ns_coefficients, eps, ns_steps, adjust_lr_fn, ns_dtype:
        Muon's, as in :func:`muon`.
      adamw_learning_rate: AdamW's ``lr``; ``None`` shares Muon's (the recipe of Liu et al.,
        with ``adjust_lr_fn="match_rms_adamw"``).
      adamw_b1, adamw_b2, adamw_eps, adamw_weight_decay: AdamW's ``betas``, ``eps`` and
        ``weight_decay`` (torch's defaults).
      labels: a function of the params returning a tree of ``"muon"``/``"adamw"`` labels (or
        a prefix of one); ``None`` is :func:`gradxform.muon_labels`. Only 2-D leaves may be
        labelled ``"muon"``.
      maximize: ascend the objective instead, in both groups.
      stack_by_shape: Muon's, as in :func:`muon` (AdamW's state stays a tree).

    Returns:
      ``multi_transform({"muon": muon(...), "adamw": adamw(...)}, labels)`` over the groups
      present; its state is :class:`gradxform.MultiTransformState`.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> params = {"embed": jnp.ones((10, 4)), "w": jnp.ones((4, 4)), "b": jnp.ones(4)}
      >>> opt = gx.muon_with_adamw(0.02, adamw_learning_rate=3e-4)
      >>> sorted(opt.init(params).inner_states)
      ['adamw', 'muon']
    """
    who = "muon_with_adamw"
    _check_muon(
        who,
        learning_rate,
        weight_decay,
        momentum,
        nesterov,
        ns_coefficients,
        eps,
        ns_steps,
        adjust_lr_fn,
        ns_dtype,
    )
    if adamw_learning_rate is not None:
        _validate.learning_rate(who, adamw_learning_rate, "adamw_learning_rate")
    _validate.probability(who, "adamw_b1", adamw_b1)
    _validate.probability(who, "adamw_b2", adamw_b2)
    _validate.non_negative(who, "adamw_eps", adamw_eps)
    _validate.non_negative(who, "adamw_weight_decay", adamw_weight_decay)
    if labels is not None:
        _validate.function(who, "labels", labels)
    _validate.boolean(who, "maximize", maximize)
    _validate.boolean(who, "stack_by_shape", stack_by_shape)
    groups: dict[Hashable, GradientTransformation] = {
        "muon": muon(
            learning_rate,
            weight_decay=weight_decay,
            momentum=momentum,
            nesterov=nesterov,
            ns_coefficients=ns_coefficients,
            eps=eps,
            ns_steps=ns_steps,
            adjust_lr_fn=adjust_lr_fn,
            ns_dtype=ns_dtype,
            maximize=maximize,
            stack_by_shape=stack_by_shape,
        ),
        "adamw": adamw(
            learning_rate if adamw_learning_rate is None else adamw_learning_rate,
            adamw_b1,
            adamw_b2,
            adamw_eps,
            weight_decay=adamw_weight_decay,
            maximize=maximize,
        ),
    }
    build = _grouped(groups, muon_labels if labels is None else labels)

    def init_fn(params):
        return build(params).init(params)

    def update_fn(updates, state, params=None, **extra_args):
        tree = updates if params is None else params
        if _masks.has_no_leaves(tree):
            return updates, state
        return build(tree).update(updates, state, params, **extra_args)

    return GradientTransformationExtraArgs(init_fn, update_fn)
