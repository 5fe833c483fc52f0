"""gradxform: optimizers for JAX built by chaining small, pure gradient transformations."""

from gradxform import tree_utils
from gradxform._base import (
    EmptyState,
    GradientTransformation,
    apply_updates,
    chain,
    identity,
    named_chain,
    stateless,
)
from gradxform._masks import MaskedNode
from gradxform.checkpoint import CheckpointError, load_state, save_state
from gradxform.flat import FlatLayout, flatten_params
from gradxform.interop.torch_state import from_torch_state, to_torch_state
from gradxform.optimizers.adam import adam, adamax, adamw, amsgrad, nadam, radam, sparse_adam
from gradxform.optimizers.adam_variants import acprop, ademamix, adopt, madgrad, simplified_ademamix
from gradxform.optimizers.factored import adafactor
from gradxform.optimizers.lbfgs import lbfgs
from gradxform.optimizers.momo import momo, momo_adam
from gradxform.optimizers.muon import muon, muon_with_adamw
from gradxform.optimizers.parameter_free import cocob, dog, dowg
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
from gradxform.transforms.adam_variants import scale_by_acprop, scale_by_adopt
from gradxform.transforms.ademamix import (
    ScaleByAdemamixState,
    ScaleBySimplifiedAdEMAMixState,
    scale_by_ademamix,
    scale_by_simplified_ademamix,
)
from gradxform.transforms.asgd import ScaleByAsgdState, asgd_averaged_params, scale_by_asgd
from gradxform.transforms.clipping import (
    adaptive_grad_clip,
    clip,
    clip_by_block_rms,
    clip_by_global_norm,
)
from gradxform.transforms.coin import COCOBState, scale_by_cocob
from gradxform.transforms.complex import (
    SplitRealAndImaginaryArrays,
    SplitRealAndImaginaryState,
    split_real_and_imaginary,
)
from gradxform.transforms.constrain import ZeroNansState, zero_nans
from gradxform.transforms.decay import add_decayed_weights, add_l2
from gradxform.transforms.dog import (
    DoGState,
    DoWGState,
    ScaleByDistanceOverGradientsState,
    scale_by_distance_over_gradients,
    scale_by_dog,
    scale_by_dowg,
)
from gradxform.transforms.factored import (
    FactoredState,
    ScaleByAdafactorState,
    scale_by_adafactor,
    scale_by_factored_rms,
    scale_by_param_block_rms,
)
from gradxform.transforms.hutchinson import HutchinsonState, hutchinson_estimator_diag_hessian
from gradxform.transforms.lbfgs import ScaleByLBFGSState, scale_by_lbfgs
from gradxform.transforms.linesearch import (
    BacktrackingLinesearchInfo,
    ScaleByBacktrackingLinesearchState,
    ScaleByZoomLinesearchState,
    ZoomLinesearchInfo,
    scale_by_backtracking_linesearch,
    value_and_grad_from_state,
)
from gradxform.transforms.madgrad import MadgradState, scale_by_madgrad
from gradxform.transforms.momentum import EmaState, TraceState, ema, trace
from gradxform.transforms.momo import MomoAdamState, MomoState
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
from gradxform.wrappers.mechanize import MechanicState, mechanize
from gradxform.wrappers.phases import JoinTransformsState, join_transforms
from gradxform.wrappers.sam import NormalizeState, SAMState, normalize, sam
from gradxform.wrappers.sharding import ShardedState, cross_replica_mean, shard_optimizer_state

__version__ = "0.1.0"

__all__ = [
    "ApplyIfFiniteState",
    "BacktrackingLinesearchInfo",
    "COCOBState",
    "CheckpointError",
    "DoGState",
    "DoWGState",
    "DynamicLossScale",
    "DynamicLossScaleState",
    "EmaState",
    "EmptyState",
    "FactoredState",
    "FlatLayout",
    "GradientTransformation",
    "HutchinsonState",
    "InjectHyperparamsState",
    "JoinTransformsState",
    "LbfgsState",
    "LookaheadState",
    "MadgradState",
    "MaskedNode",
    "MaskedState",
    "MechanicState",
    "MomoAdamState",
    "MomoState",
    "MultiSteps",
    "MultiStepsState",
    "MultiTransformState",
    "NormalizeState",
    "ParamsAverageState",
    "ReduceLROnPlateauState",
    "SAMState",
    "ScaleByAdaDeltaState",
    "ScaleByAdafactorState",
    "ScaleByAdamState",
    "ScaleByAdamaxState",
    "ScaleByAdemamixState",
    "ScaleByAmsgradState",
    "ScaleByAsgdState",
    "ScaleByBacktrackingLinesearchState",
    "ScaleByDistanceOverGradientsState",
    "ScaleByLBFGSState",
    "ScaleByLionState",
    "ScaleByMuonState",
    "ScaleByNadamState",
    "ScaleByRStdDevState",
    "ScaleByRmsState",
    "ScaleByRpropState",
    "ScaleByRssState",
    "ScaleByScheduleState",
    "ScaleBySimplifiedAdEMAMixState",
    "ScaleBySparseAdamState",
    "ScaleByZoomLinesearchState",
    "ShardedState",
    "SplitRealAndImaginaryArrays",
    "SplitRealAndImaginaryState",
    "TraceState",
    "ZeroNansState",
    "ZoomLinesearchInfo",
    "acprop",
    "adadelta",
    "adafactor",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "adaptive_grad_clip",
    "add_decayed_weights",
    "add_l2",
    "ademamix",
    "adopt",
    "all_finite",
    "amsgrad",
    "apply_if_finite",
    "apply_updates",
    "asgd",
    "asgd_averaged_params",
    "averaged_params",
    "chain",
    "chained_schedule",
    "clip",
    "clip_by_block_rms",
    "clip_by_global_norm",
    "cocob",
    "constant_schedule",
    "cosine_annealing_schedule",
    "cosine_annealing_warm_restarts",
    "cosine_decay_schedule",
    "cosine_onecycle_schedule",
    "cross_replica_mean",
    "current_loss_scale",
    "cyclic_schedule",
    "decay_matrices_only",
    "dog",
    "dowg",
    "dynamic_loss_scale",
    "ema",
    "ema_params",
    "exponential_decay",
    "flatten_params",
    "freeze",
    "from_torch_state",
    "gradient_accumulation",
    "hutchinson_estimator_diag_hessian",
    "identity",
    "inject_hyperparams",
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
    "madgrad",
    "masked",
    "mechanize",
    "momo",
    "momo_adam",
    "multi_transform",
    "multiplicative_schedule",
    "muon",
    "muon_labels",
    "muon_with_adamw",
    "nadam",
    "named_chain",
    "normalize",
    "piecewise_constant_schedule",
    "piecewise_interpolate_schedule",
    "polynomial_schedule",
    "radam",
    "reduce_on_plateau",
    "rmsprop",
    "rprop",
    "sam",
    "save_state",
    "scale",
    "scale_by_acprop",
    "scale_by_adadelta",
    "scale_by_adafactor",
    "scale_by_adam",
    "scale_by_adamax",
    "scale_by_ademamix",
    "scale_by_adopt",
    "scale_by_asgd",
    "scale_by_backtracking_linesearch",
    "scale_by_cocob",
    "scale_by_distance_over_gradients",
    "scale_by_dog",
    "scale_by_dowg",
    "scale_by_factored_rms",
    "scale_by_lbfgs",
    "scale_by_learning_rate",
    "scale_by_lion",
    "scale_by_madgrad",
    "scale_by_muon",
    "scale_by_nadam",
    "scale_by_param_block_rms",
    "scale_by_radam",
    "scale_by_rms",
    "scale_by_rprop",
    "scale_by_rss",
    "scale_by_schedule",
    "scale_by_simplified_ademamix",
    "scale_by_sparse_adam",
    "scale_by_stddev",
    "scale_by_zoom_linesearch",
    "set_to_zero",
    "sgd",
    "sgdr_schedule",
    "shard_optimizer_state",
    "simplified_ademamix",
    "sparse_adam",
    "split_real_and_imaginary",
    "stateless",
    "swa_params",
    "swalr_schedule",
    "to_torch_state",
    "trace",
    "tree_utils",
    "value_and_grad_from_state",
    "warmup_cosine_decay_schedule",
    "warmup_exponential_decay_schedule",
    "zero_nans",
]
