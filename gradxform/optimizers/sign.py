"""Sign-based optimizers: Lion."""

from __future__ import annotations

from typing import Any

from gradxform import _validate
from gradxform._base import GradientTransformation, chain
from gradxform._types import MaskOrFn, ScalarOrSchedule
from gradxform.optimizers._links import check_common, decay_link
from gradxform.transforms.scaling import scale_by_learning_rate
from gradxform.transforms.sign import scale_by_lion


def lion(
    learning_rate: ScalarOrSchedule = 1e-4,
    b1: float = 0.9,
    b2: float = 0.99,
    mu_dtype: Any | None = None,
    weight_decay: float = 1e-3,
    mask: MaskOrFn = None,
) -> GradientTransformation:
    """Lion (Chen et al., 2023). Not in ``torch.optim``; defaults are the paper's and Optax's.

    ::

        p <- p - lr * (sign(b1 * m_{t-1} + (1 - b1) * g_t) + weight_decay * p)
        m_t = b2 * m_{t-1} + (1 - b2) * g_t

    Args:
      learning_rate: ``lr``, a number or a schedule (Lion wants 3-10x smaller than AdamW's).
      b1, b2: see :func:`scale_by_lion`.
      mu_dtype: dtype of the momentum.
      weight_decay: the decoupled decay ``lambda``.
      mask: which leaves to decay, as in :func:`adamw`.

    Returns:
      ``chain(scale_by_lion, add_decayed_weights, scale_by_learning_rate)``.
    """
    who = "lion"
    check_common(who, learning_rate, weight_decay)
    _validate.probability(who, "b1", b1)
    _validate.probability(who, "b2", b2)
    _validate.dtype(who, "mu_dtype", mu_dtype)
    _validate.mask(who, "mask", mask)
    return chain(
        scale_by_lion(b1, b2, mu_dtype),
        *decay_link(who, weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )
