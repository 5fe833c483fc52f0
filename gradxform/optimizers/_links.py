"""What optimizers share: argument checks, optional links, weight decay, torch's semantics, and
the record of which ``torch.optim`` class (and which param-group hyperparameters) a torch-named
optimizer reproduces.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from typing import Any

from gradxform import _validate
from gradxform._base import GradientTransformation, chain
from gradxform._types import MaskOrFn
from gradxform.transforms.complex import real_pairs
from gradxform.transforms.decay import decayed_weights
from gradxform.transforms.scaling import scale

# The attribute of a torch-named optimizer's ``init`` function that holds its TorchSpec.
TORCH_SPEC_ATTRIBUTE = "torch_spec"


@dataclasses.dataclass(frozen=True)
class TorchSpec:
    """Which ``torch.optim`` class an optimizer reproduces, and the hyperparameters of its one
    param group, under torch's names (``lr``, ``betas``, ``weight_decay``, ``maximize``, ...).

    ``group["lr"]`` is the optimizer's learning rate as given: a number or a schedule of the
    step count. torch's implementation switches (``foreach``, ``fused``, ``capturable``,
    ``differentiable``) are not hyperparameters and are not recorded.
    """

    cls_name: str
    group: Mapping[str, Any]

    def __post_init__(self) -> None:
        object.__setattr__(self, "group", types.MappingProxyType(dict(self.group)))


def torch_spec(transform: Any) -> TorchSpec | None:
    """The :class:`TorchSpec` that :func:`torch_optimizer` recorded on ``transform``, or
    ``None`` (not a torch-named optimizer, or one wrapped in something else)."""
    return getattr(getattr(transform, "init", None), TORCH_SPEC_ATTRIBUTE, None)


def adam_spec(
    cls_name: str,
    learning_rate: Any,
    b1: Any,
    b2: Any,
    eps: Any,
    weight_decay: Any = None,
    more: Mapping[str, Any] | None = None,
) -> TorchSpec:
    """The record of a class of torch's Adam family: ``lr``, ``betas``, ``eps``, then
    ``weight_decay`` (unless ``None``: SparseAdam has none) and the class's own ``more``."""
    group = {"lr": learning_rate, "betas": (b1, b2), "eps": eps}
    if weight_decay is not None:
        group["weight_decay"] = weight_decay
    return TorchSpec(cls_name, {**group, **(more or {})})


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
    who: str,
    *links: GradientTransformation,
    maximize: bool,
    torch_spec: TorchSpec | None = None,
) -> GradientTransformation:
    """A torch-named optimizer: ``chain(*links)``, as ``torch.optim`` computes it.

    ``maximize`` negates the gradient first (torch's ``maximize=True``, before weight decay),
    and complex params are seen as (real, imaginary) pairs, each part with its own moments,
    as torch's ``view_as_real`` does; for real params the state is the chain's own.

    ``torch_spec`` (optional) records the torch class and param-group hyperparameters that
    the optimizer reproduces; ``maximize`` is added to its group here. The record is kept as
    the attribute ``torch_spec`` of the returned transformation's ``init`` function, read with
    :func:`torch_spec`: the ``GradientTransformation`` keeps its two fields, and ``init`` and
    ``update`` behave as without it. Anything that wraps the optimizer (``chain``,
    ``inject_hyperparams``, ...) builds a new ``init`` without it, so only an optimizer used
    as it is carries one (what :func:`gradxform.from_torch_state` and
    :func:`gradxform.to_torch_state` need: torch's state of one optimizer).
    """
    _validate.boolean(who, "maximize", maximize)
    transform = real_pairs(chain(*optional(maximize, scale(-1.0)), *links))
    if torch_spec is not None:
        record = TorchSpec(torch_spec.cls_name, {**torch_spec.group, "maximize": maximize})
        setattr(transform.init, TORCH_SPEC_ATTRIBUTE, record)
    return transform
