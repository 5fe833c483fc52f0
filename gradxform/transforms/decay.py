"""Weight decay: adding a multiple of the parameters to the updates (or, as GaLore's reference
does, of the new parameters after the step)."""

from __future__ import annotations

from typing import Any

from gradxform import _checks, _tree, _validate
from gradxform._base import EmptyState, GradientTransformation, require_params
from gradxform._types import MaskOrFn
from gradxform.wrappers.masking import masked


def add_decayed_weights(weight_decay: float = 0.0, mask: MaskOrFn = None) -> GradientTransformation:
    """Adds decayed weights: ``u <- u + weight_decay * p``.

    Placed after the preconditioner and before the learning rate, this is decoupled weight
    decay (AdamW's ``p <- p - lr * weight_decay * p``); placed first, it is L2 regularisation
    (see :func:`add_l2`).

    Args:
      weight_decay: the factor ``lambda`` (>= 0).
      mask: a tree of bools (or a function of params returning one) selecting the leaves to
        decay; ``None`` decays all. See :func:`gradxform.masked`.

    Returns:
      A stateless transformation (masked if ``mask`` is given). Needs ``params``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx, params = gx.add_decayed_weights(0.1), jnp.array([2.0, -4.0])
      >>> tx.update(jnp.ones(2), tx.init(params), params)[0]  # u + 0.1 p
      Array([1.2, 0.6], dtype=float32)
    """
    _validate.mask("add_decayed_weights", "mask", mask)
    return decayed_weights(weight_decay, mask, who="add_decayed_weights")


def decayed_weights(weight_decay: Any, mask: MaskOrFn, who: str) -> GradientTransformation:
    """``u <- u + weight_decay * p``, with errors naming ``who`` (the caller users see)."""
    _validate.non_negative(who, "weight_decay", weight_decay)

    def init_fn(params):
        del params
        return EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        require_params(who, params, "weight decay adds a multiple of them to the updates")
        _checks.check_updates(who, updates, params, "param", inexact=False)
        return _tree.tree_add_scaled(updates, weight_decay, params), state

    transform = GradientTransformation(init_fn, update_fn)
    if mask is not None:
        return masked(transform, mask)
    return transform


def add_l2(weight_decay: float = 0.0, *, mask: MaskOrFn = None) -> GradientTransformation:
    """Coupled weight decay (L2 regularisation): ``g <- g + weight_decay * p``.

    The same arithmetic as :func:`add_decayed_weights`, meant to come first in a chain so that
    the preconditioner sees the regularised gradient: this is the ``weight_decay`` of
    ``torch.optim.SGD``, ``Adam``, ``Adagrad``, ``RMSprop`` and ``Adamax``.

    Args:
      weight_decay: the factor ``lambda`` (>= 0).
      mask: as in :func:`add_decayed_weights`.

    Returns:
      A stateless transformation. Needs ``params``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt = gx.chain(gx.add_l2(0.1), gx.scale_by_adam())  # Adam sees g + 0.1 p
      >>> params = jnp.array([2.0, -40.0])
      >>> u, _ = opt.update(jnp.ones(2), opt.init(params), params)
      >>> [round(float(x), 4) for x in u]  # (g + 0.1 p) / |g + 0.1 p|
      [1.0, -1.0]
    """
    _validate.mask("add_l2", "mask", mask)
    return decayed_weights(weight_decay, mask, who="add_l2")
