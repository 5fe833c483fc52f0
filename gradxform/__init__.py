"""gradxform: optimizers for JAX built by chaining small, pure gradient transformations."""

from gradxform import optimizers, schedules, transforms, tree_utils, wrappers
from gradxform._base import (
    AdaptiveGradClipState,
    AddDecayedWeightsState,
    ClipByGlobalNormState,
    ClipState,
    EmptyState,
    GradientTransformation,
    GradientTransformationExtraArgs,
    NonNegativeParamsState,
    ScaleByTrustRatioState,
    ScaleState,
    apply_updates,
    chain,
    identity,
    init_empty_state,
    named_chain,
    stateless,
    stateless_with_tree_map,
    with_extra_args_support,
)
from gradxform._masks import MaskedNode
from gradxform._types import (
    MaskOrFn,
    OptState,
    Params,
    ScalarOrSchedule,
    Schedule,
    StatefulSchedule,
    TransformInitFn,
    TransformUpdateExtraArgsFn,
    TransformUpdateFn,
    Updates,
)
from gradxform.checkpoint import CheckpointError, load_state, save_state
from gradxform.flat import FlatLayout, flatten, flatten_params
from gradxform.interop.torch_state import from_torch_state, to_torch_state
from gradxform.numerics import (
    global_norm,
    safe_increment,
    safe_int32_increment,
    safe_norm,
    safe_root_mean_squares,
)
from gradxform.optimizers import *  # noqa: F403
from gradxform.schedules import *  # noqa: F403
from gradxform.transforms import *  # noqa: F403
from gradxform.tree_utils import tree_bias_correction as bias_correction
from gradxform.tree_utils import tree_map_params
from gradxform.tree_utils import tree_update_infinity_moment as update_infinity_moment
from gradxform.tree_utils import tree_update_moment as update_moment
from gradxform.tree_utils import tree_update_moment_per_elem_norm as update_moment_per_elem_norm
from gradxform.wrappers import *  # noqa: F403

__version__ = "0.2.0"

__all__ = [
    "AdaptiveGradClipState",
    "AddDecayedWeightsState",
    "CheckpointError",
    "ClipByGlobalNormState",
    "ClipState",
    "EmptyState",
    "FlatLayout",
    "GradientTransformation",
    "GradientTransformationExtraArgs",
    "MaskOrFn",
    "MaskedNode",
    "NonNegativeParamsState",
    "OptState",
    "Params",
    "ScalarOrSchedule",
    "ScaleByTrustRatioState",
    "ScaleState",
    "Schedule",
    "StatefulSchedule",
    "TransformInitFn",
    "TransformUpdateExtraArgsFn",
    "TransformUpdateFn",
    "Updates",
    "apply_updates",
    "bias_correction",
    "chain",
    "flatten",
    "flatten_params",
    "from_torch_state",
    "global_norm",
    "identity",
    "init_empty_state",
    "load_state",
    "named_chain",
    "safe_increment",
    "safe_int32_increment",
    "safe_norm",
    "safe_root_mean_squares",
    "save_state",
    "stateless",
    "stateless_with_tree_map",
    "to_torch_state",
    "tree_map_params",
    "tree_utils",
    "update_infinity_moment",
    "update_moment",
    "update_moment_per_elem_norm",
    "with_extra_args_support",
]
__all__ += optimizers.__all__
__all__ += schedules.__all__
__all__ += transforms.__all__
__all__ += wrappers.__all__
