"""gradxform: optimizers for JAX built by chaining small, pure gradient transformations."""

from gradxform import tree_utils
from gradxform._base import (
    EmptyState,
    GradientTransformation,
    GradientTransformationExtraArgs,
    TransformInitFn,
    TransformUpdateExtraArgsFn,
    TransformUpdateFn,
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
    Updates,
)
from gradxform.checkpoint import CheckpointError, load_state, save_state
from gradxform.flat import FlatLayout, flatten_params
from gradxform.interop.torch_state import from_torch_state, to_torch_state
from gradxform.numerics import (
    global_norm,
    safe_increment,
    safe_int32_increment,
    safe_norm,
    safe_root_mean_squares,
)
from gradxform.optimizers.adam import adam, adamax, adamw, amsgrad, nadam, radam, sparse_adam
from gradxform.optimizers.factored import adafactor
from gradxform.optimizers.lbfgs import lbfgs
from gradxform.optimizers.muon import muon, muon_with_adamw
from gradxform.optimizers.rms import adadelta, adagrad, rmsprop
from gradxform.optimizers.sgd import asgd, sgd
from gradxform.optimizers.sign import lion, rprop
from gradxform.schedules import (
    chained_schedule,
    constant_schedule,
    cosine_annealing_schedule,
    cosine_annealing_warm_restarts,
    cosine_decay_schedule,
    cosine_onecycle_schedule,
    cyclic_schedule,
    exponential_decay,
    inverse_time_decay,
    join_schedules,
    linear_onecycle_schedule,
    linear_schedule,
    multiplicative_schedule,
    piecewise_constant_schedule,
    piecewise_interpolate_schedule,
    polynomial_schedule,
    sgdr_schedule,
    swalr_schedule,
    warmup_constant_schedule,
    warmup_cosine_decay_schedule,
    warmup_exponential_decay_schedule,
)
from gradxform.transforms.adadelta import ScaleByAdaDeltaState, scale_by_adadelta
from gradxform.transforms.adam import (
    ScaleByAdamaxState,
    ScaleByAdamState,
    ScaleByAmsgradState,
    ScaleByNadamState,
    scale_by_adam,
    scale_by_adamax,
    scale_by_nadam,
)
from gradxform.transforms.asgd import ScaleByAsgdState, asgd_averaged_params, scale_by_asgd
from gradxform.transforms.clipping import (
    adaptive_grad_clip,
    clip,
    clip_by_block_rms,
    clip_by_global_norm,
)
from gradxform.transforms.complex import (
    SplitRealAndImaginaryArrays,
    SplitRealAndImaginaryState,
    split_real_and_imaginary,
)
from gradxform.transforms.constrain import ZeroNansState, zero_nans
from gradxform.transforms.decay import add_decayed_weights, add_l2
from gradxform.transforms.factored import (
    FactoredState,
    ScaleByAdafactorState,
    scale_by_adafactor,
    scale_by_factored_rms,
    scale_by_param_block_rms,
)
from gradxform.transforms.lbfgs import ScaleByLBFGSState, scale_by_lbfgs
from gradxform.transforms.linesearch import (
    BacktrackingLinesearchInfo,
    ScaleByBacktrackingLinesearchState,
    ScaleByZoomLinesearchState,
    ZoomLinesearchInfo,
    scale_by_backtracking_linesearch,
    value_and_grad_from_state,
)
from gradxform.transforms.momentum import EmaState, TraceState, ema, trace
from gradxform.transforms.muon import ScaleByMuonState, muon_labels, scale_by_muon
from gradxform.transforms.plateau import ReduceLROnPlateauState, reduce_on_plateau
from gradxform.transforms.radam import scale_by_radam
from gradxform.transforms.rms import (
    ScaleByRmsState,
    ScaleByRssState,
    ScaleByRStdDevState,
    scale_by_rms,
    scale_by_rss,
    scale_by_stddev,
)
from gradxform.transforms.rprop import ScaleByRpropState, scale_by_rprop
from gradxform.transforms.scaling import (
    ScaleByScheduleState,
    scale,
    scale_by_learning_rate,
    scale_by_schedule,
    set_to_zero,
)
from gradxform.transforms.sign import ScaleByLionState, scale_by_lion
from gradxform.transforms.sparse import ScaleBySparseAdamState, scale_by_sparse_adam
from gradxform.transforms.torch_lbfgs import LbfgsState
from gradxform.transforms.zoom import scale_by_zoom_linesearch
from gradxform.tree_utils import tree_bias_correction as bias_correction
from gradxform.tree_utils import tree_map_params
from gradxform.tree_utils import tree_update_infinity_moment as update_infinity_moment
from gradxform.tree_utils import tree_update_moment as update_moment
from gradxform.tree_utils import tree_update_moment_per_elem_norm as update_moment_per_elem_norm
from gradxform.wrappers.accumulation import MultiSteps, MultiStepsState, gradient_accumulation
from gradxform.wrappers.averaging import (
    LookaheadState,
    ParamsAverageState,
    averaged_params,
    ema_params,
    lookahead,
    lookahead_slow_params,
    swa_params,
)
from gradxform.wrappers.guards import ApplyIfFiniteState, all_finite, apply_if_finite
from gradxform.wrappers.hyperparams import InjectHyperparamsState, inject_hyperparams
from gradxform.wrappers.loss_scale import (
    DynamicLossScale,
    DynamicLossScaleState,
    current_loss_scale,
    dynamic_loss_scale,
)
from gradxform.wrappers.masking import (
    MaskedState,
    MultiTransformState,
    decay_matrices_only,
    freeze,
    masked,
    multi_transform,
)
from gradxform.wrappers.phases import JoinTransformsState, join_transforms
from gradxform.wrappers.sharding import ShardedState, cross_replica_mean, shard_optimizer_state
from gradxform.wrappers.stateful_hyperparams import (
    InjectStatefulHyperparamsState,
    WrappedSchedule,
    WrappedScheduleState,
    inject_stateful_hyperparams,
)

__version__ = "0.1.0"

__all__ = [
    "ApplyIfFiniteState",
    "BacktrackingLinesearchInfo",
    "CheckpointError",
    "DynamicLossScale",
    "DynamicLossScaleState",
    "EmaState",
    "EmptyState",
    "FactoredState",
    "FlatLayout",
    "GradientTransformation",
    "GradientTransformationExtraArgs",
    "InjectHyperparamsState",
    "InjectStatefulHyperparamsState",
    "JoinTransformsState",
    "LbfgsState",
    "LookaheadState",
    "MaskOrFn",
    "MaskedNode",
    "MaskedState",
    "MultiSteps",
    "MultiStepsState",
    "MultiTransformState",
    "OptState",
    "Params",
    "ParamsAverageState",
    "ReduceLROnPlateauState",
    "ScalarOrSchedule",
    "ScaleByAdaDeltaState",
    "ScaleByAdafactorState",
    "ScaleByAdamState",
    "ScaleByAdamaxState",
    "ScaleByAmsgradState",
    "ScaleByAsgdState",
    "ScaleByBacktrackingLinesearchState",
    "ScaleByLBFGSState",
    "ScaleByLionState",
    "ScaleByMuonState",
    "ScaleByNadamState",
    "ScaleByRStdDevState",
    "ScaleByRmsState",
    "ScaleByRpropState",
    "ScaleByRssState",
    "ScaleByScheduleState",
    "ScaleBySparseAdamState",
    "ScaleByZoomLinesearchState",
    "Schedule",
    "ShardedState",
    "SplitRealAndImaginaryArrays",
    "SplitRealAndImaginaryState",
    "StatefulSchedule",
    "TraceState",
    "TransformInitFn",
    "TransformUpdateExtraArgsFn",
    "TransformUpdateFn",
    "Updates",
    "WrappedSchedule",
    "WrappedScheduleState",
    "ZeroNansState",
    "ZoomLinesearchInfo",
    "adadelta",
    "adafactor",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "adaptive_grad_clip",
    "add_decayed_weights",
    "add_l2",
    "all_finite",
    "amsgrad",
    "apply_if_finite",
    "apply_updates",
    "asgd",
    "asgd_averaged_params",
    "averaged_params",
    "bias_correction",
    "chain",
    "chained_schedule",
    "clip",
    "clip_by_block_rms",
    "clip_by_global_norm",
    "constant_schedule",
    "cosine_annealing_schedule",
    "cosine_annealing_warm_restarts",
    "cosine_decay_schedule",
    "cosine_onecycle_schedule",
    "cross_replica_mean",
    "current_loss_scale",
    "cyclic_schedule",
    "decay_matrices_only",
    "dynamic_loss_scale",
    "ema",
    "ema_params",
    "exponential_decay",
    "flatten_params",
    "freeze",
    "from_torch_state",
    "global_norm",
    "gradient_accumulation",
    "identity",
    "init_empty_state",
    "inject_hyperparams",
    "inject_stateful_hyperparams",
    "inverse_time_decay",
    "join_schedules",
    "join_transforms",
    "lbfgs",
    "linear_onecycle_schedule",
    "linear_schedule",
    "lion",
    "load_state",
    "lookahead",
    "lookahead_slow_params",
    "masked",
    "multi_transform",
    "multiplicative_schedule",
    "muon",
    "muon_labels",
    "muon_with_adamw",
    "nadam",
    "named_chain",
    "piecewise_constant_schedule",
    "piecewise_interpolate_schedule",
    "polynomial_schedule",
    "radam",
    "reduce_on_plateau",
    "rmsprop",
    "rprop",
    "safe_increment",
    "safe_int32_increment",
    "safe_norm",
    "safe_root_mean_squares",
    "save_state",
    "scale",
    "scale_by_adadelta",
    "scale_by_adafactor",
    "scale_by_adam",
    "scale_by_adamax",
    "scale_by_asgd",
    "scale_by_backtracking_linesearch",
    "scale_by_factored_rms",
    "scale_by_lbfgs",
    "scale_by_learning_rate",
    "scale_by_lion",
    "scale_by_muon",
    "scale_by_nadam",
    "scale_by_param_block_rms",
    "scale_by_radam",
    "scale_by_rms",
    "scale_by_rprop",
    "scale_by_rss",
    "scale_by_schedule",
    "scale_by_sparse_adam",
    "scale_by_stddev",
    "scale_by_zoom_linesearch",
    "set_to_zero",
    "sgd",
    "sgdr_schedule",
    "shard_optimizer_state",
    "sparse_adam",
    "split_real_and_imaginary",
    "stateless",
    "stateless_with_tree_map",
    "swa_params",
    "swalr_schedule",
    "to_torch_state",
    "trace",
    "tree_map_params",
    "tree_utils",
    "update_infinity_moment",
    "update_moment",
    "update_moment_per_elem_norm",
    "value_and_grad_from_state",
    "warmup_constant_schedule",
    "warmup_cosine_decay_schedule",
    "warmup_exponential_decay_schedule",
    "with_extra_args_support",
    "zero_nans",
]
