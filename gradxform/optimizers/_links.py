"""What optimizers share: argument checks, optional links, weight decay, torch's semantics."""

from __future__ import annotations

from typing import Any

from gradxform import _validate
from gradxform._base import GradientTransformation, chain
from gradxform._types import MaskOrFn
from gradxform.transforms.complex import real_pairs
from gradxform.transforms.decay import decayed_weights
from gradxform.transforms.scaling import scale


def optional(condition: bool, transform: GradientTransformation) -> list[GradientTransformation]:
    """``[transform]`` if ``condition``, else nothing: for links a static 0 switches off."""
    return [transform] if condition else []


def check_common(who: str, learning_rate: Any, weight_decay: Any) -> None:
    """The learning rate (a number or a schedule) and the weight decay (>= 0)."""
    _validate.learning_rate(who, learning_rate)
    _validate.non_negative(who, "weight_decay", weight_decay)


def decay_link(who: str, factor: Any, mask: MaskOrFn = None) -> list[GradientTransformation]:
    """``u <- u + factor * p`` as a link, left out only for a static 0 (a traced 0 keeps it)."""
    return optional(not _validate.is_static_zero(factor), decayed_weights(factor, mask, who))


def torch_optimizer(
    who: str, *links: GradientTransformation, maximize: bool
) -> GradientTransformation:
    """A torch-named optimizer: ``chain(*links)``, as ``torch.optim`` computes it.

    ``maximize`` negates the gradient first (torch's ``maximize=True``, before weight decay),
    and complex params are seen as (real, imaginary) pairs, each part with its own moments,
    as torch's ``view_as_real`` does; for real params the state is the chain's own.
    """
    _validate.boolean(who, "maximize", maximize)
    return real_pairs(chain(*optional(maximize, scale(-1.0)), *links))
