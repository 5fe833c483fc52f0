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
from gradxform.optimizers.factored import adafactor
from gradxform.optimizers.lbfgs import lbfgs
from gradxform.optimizers.muon import muon, muon_with_adamw
from gradxform.optimizers.optax_adaptive import (
    adabelief,
    adan,
    novograd,
    optimistic_adam,
    optimistic_adam_v2,
    optimistic_gradient_descent,
    yogi,
)
from gradxform.optimizers.optax_sgd import noisy_sgd, polyak_sgd, sign_sgd, signum, sm3
from gradxform.optimizers.rms import adadelta, adagrad, rmsprop
from gradxform.optimizers.sgd import asgd, sgd
from gradxform.optimizers.sign import lion, rprop
from gradxform.optimizers.trust_ratio import fromage, lamb, lars
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
from gradxform.transforms.adan import ScaleByAdanState, scale_by_adan
from gradxform.transforms.adaptive import (
    ScaleByBeliefState,
    ScaleByNovogradState,
    scale_by_belief,
    scale_by_novograd,
    scale_by_yogi,
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
from gradxform.transforms.optimistic import (
    ScaleByOptimisticGradientState,
    scale_by_optimistic_gradient,
)
from gradxform.transforms.plateau import ReduceLROnPlateauState, reduce_on_plateau
from gradxform.transforms.polyak import scale_by_polyak
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
from gradxform.transforms.sm3 import ScaleBySM3State, scale_by_sm3
from gradxform.transforms.sparse import ScaleBySparseAdamState, scale_by_sparse_adam
from gradxform.transforms.torch_lbfgs import LbfgsState
from gradxform.transforms.trust_ratio import scale_by_param_block_norm, scale_by_trust_ratio
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
from gradxform.wrappers.phases import JoinTransformsState, join_transforms
from gradxform.wrappers.sharding import ShardedState, cross_replica_mean, shard_optimizer_state

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
    "InjectHyperparamsState",
    "JoinTransformsState",
    "LbfgsState",
    "LookaheadState",
    "MaskedNode",
    "MaskedState",
    "MultiSteps",
    "MultiStepsState",
    "MultiTransformState",
    "ParamsAverageState",
    "ReduceLROnPlateauState",
    "ScaleByAdaDeltaState",
    "ScaleByAdafactorState",
    "ScaleByAdamState",
    "ScaleByAdamaxState",
    "ScaleByAdanState",
    "ScaleByAmsgradState",
    "ScaleByAsgdState",
    "ScaleByBacktrackingLinesearchState",
    "ScaleByBeliefState",
    "ScaleByLBFGSState",
    "ScaleByLionState",
    "ScaleByMuonState",
    "ScaleByNadamState",
    "ScaleByNovogradState",
    "ScaleByOptimisticGradientState",
    "ScaleByRStdDevState",
    "ScaleByRmsState",
    "ScaleByRpropState",
    "ScaleByRssState",
    "ScaleBySM3State",
    "ScaleByScheduleState",
    "ScaleBySparseAdamState",
    "ScaleByZoomLinesearchState",
    "ShardedState",
    "SplitRealAndImaginaryArrays",
    "SplitRealAndImaginaryState",
    "TraceState",
    "ZeroNansState",
    "ZoomLinesearchInfo",
    "adabelief",
    "adadelta",
    "adafactor",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "adan",
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
    "fromage",
    "gradient_accumulation",
    "identity",
    "inject_hyperparams",
    "inverse_time_decay",
    "join_schedules",
    "join_transforms",
    "lamb",
    "lars",
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
    "noisy_sgd",
    "novograd",
    "optimistic_adam",
    "optimistic_adam_v2",
    "optimistic_gradient_descent",
    "piecewise_constant_schedule",
    "piecewise_interpolate_schedule",
    "polyak_sgd",
    "polynomial_schedule",
    "radam",
    "reduce_on_plateau",
    "rmsprop",
    "rprop",
    "save_state",
    "scale",
    "scale_by_adadelta",
    "scale_by_adafactor",
    "scale_by_adam",
    "scale_by_adamax",
    "scale_by_adan",
    "scale_by_asgd",
    "scale_by_backtracking_linesearch",
    "scale_by_belief",
    "scale_by_factored_rms",
    "scale_by_lbfgs",
    "scale_by_learning_rate",
    "scale_by_lion",
    "scale_by_muon",
    "scale_by_nadam",
    "scale_by_novograd",
    "scale_by_optimistic_gradient",
    "scale_by_param_block_norm",
    "scale_by_param_block_rms",
    "scale_by_polyak",
    "scale_by_radam",
    "scale_by_rms",
    "scale_by_rprop",
    "scale_by_rss",
    "scale_by_schedule",
    "scale_by_sm3",
    "scale_by_sparse_adam",
    "scale_by_stddev",
    "scale_by_trust_ratio",
    "scale_by_yogi",
    "scale_by_zoom_linesearch",
    "set_to_zero",
    "sgd",
    "sgdr_schedule",
    "shard_optimizer_state",
    "sign_sgd",
    "signum",
    "sm3",
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
    "yogi",
    "zero_nans",
]
