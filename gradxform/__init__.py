"""gradxform: optimizers for JAX built by chaining small, pure gradient transformations."""

from gradxform import _tree as tree_utils
from gradxform._base import (
    EmptyState,
    GradientTransformation,
    apply_updates,
    chain,
    identity,
    named_chain,
    stateless,
)
from gradxform.optimizers import adagrad, adam, adamax, adamw, amsgrad, lion, nadam, rmsprop, sgd
from gradxform.transforms.adaptive import (
    ScaleByAdamaxState,
    ScaleByAdamState,
    ScaleByAmsgradState,
    ScaleByLionState,
    ScaleByNadamState,
    ScaleByRmsState,
    ScaleByRssState,
    ScaleByRStdDevState,
    scale_by_adam,
    scale_by_adamax,
    scale_by_lion,
    scale_by_nadam,
    scale_by_rms,
    scale_by_rss,
    scale_by_stddev,
)
from gradxform.transforms.clipping import ZeroNansState, clip, clip_by_global_norm, zero_nans
from gradxform.transforms.decay import add_decayed_weights, add_l2
from gradxform.transforms.momentum import EmaState, TraceState, ema, trace
from gradxform.transforms.scaling import (
    ScaleByScheduleState,
    scale,
    scale_by_learning_rate,
    scale_by_schedule,
)
from gradxform.wrappers import MaskedNode, MaskedState, decay_matrices_only, masked

__version__ = "0.1.0"

__all__ = [
    "EmaState",
    "EmptyState",
    "GradientTransformation",
    "MaskedNode",
    "MaskedState",
    "ScaleByAdamState",
    "ScaleByAdamaxState",
    "ScaleByAmsgradState",
    "ScaleByLionState",
    "ScaleByNadamState",
    "ScaleByRStdDevState",
    "ScaleByRmsState",
    "ScaleByRssState",
    "ScaleByScheduleState",
    "TraceState",
    "ZeroNansState",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "add_decayed_weights",
    "add_l2",
    "amsgrad",
    "apply_updates",
    "chain",
    "clip",
    "clip_by_global_norm",
    "decay_matrices_only",
    "ema",
    "identity",
    "lion",
    "masked",
    "nadam",
    "named_chain",
    "rmsprop",
    "scale",
    "scale_by_adam",
    "scale_by_adamax",
    "scale_by_learning_rate",
    "scale_by_lion",
    "scale_by_nadam",
    "scale_by_rms",
    "scale_by_rss",
    "scale_by_schedule",
    "scale_by_stddev",
    "sgd",
    "stateless",
    "trace",
    "tree_utils",
    "zero_nans",
]
