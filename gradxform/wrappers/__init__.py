"""Wrappers: transformations built around other transformations, one module per concern.

``masking`` (masks, freezing), ``groups`` (parameter groups, partitions), ``blocking``
(large matrices as blocks), ``accumulation`` (gradient accumulation, skipping steps),
``microbatching`` (microbatches inside one step),
``hyperparams`` and ``stateful_hyperparams`` (hyperparameters in the state), ``phases``
(switching transformations), ``conditional`` (transformations on some steps only),
``averaging`` (parameter averages, Lookahead), ``guards`` (skipping non-finite steps),
``loss_scale`` (dynamic loss scaling), ``monitoring`` (inspecting updates inside a chain),
``privacy`` (DP-SGD), ``mechanic`` (Mechanic's learning-rate tuner), ``sharpness_aware`` (SAM),
``schedule_free_wrapper`` (Optax's schedule-free around any optimizer), ``sharding``
(multi-device: all-reduce, ZeRO-1) with the analysis that decides whether a transformation may
run on slices (``elementwise``, the jaxpr walk in ``jaxpr_walk``, its ``marks`` and the
``primitive_table``).
"""

from gradxform.wrappers.accumulation import (
    ApplyEvery,
    MultiSteps,
    MultiStepsState,
    ShouldSkipUpdateFunction,
    apply_every,
    gradient_accumulation,
    skip_large_updates,
    skip_not_finite,
)
from gradxform.wrappers.averaging import (
    LookaheadParams,
    LookaheadState,
    ParamsAverageState,
    averaged_params,
    ema_params,
    lookahead,
    lookahead_slow_params,
    swa_params,
)
from gradxform.wrappers.blocking import BlockedMatricesState, blocked_matrices
from gradxform.wrappers.conditional import (
    ConditionallyMaskState,
    ConditionallyTransformState,
    ConditionFn,
    conditionally_mask,
    conditionally_transform,
    incremental_update,
    periodic_update,
)
from gradxform.wrappers.groups import (
    MultiTransformState,
    PartitionState,
    multi_transform,
    partition,
    selective_transform,
)
from gradxform.wrappers.guards import ApplyIfFiniteState, all_finite, apply_if_finite
from gradxform.wrappers.hyperparams import InjectHyperparamsState, inject_hyperparams
from gradxform.wrappers.loss_scale import (
    DynamicLossScale,
    DynamicLossScaleState,
    current_loss_scale,
    dynamic_loss_scale,
)
from gradxform.wrappers.masking import MaskedState, decay_matrices_only, freeze, masked
from gradxform.wrappers.mechanic import MechanicState, mechanize
from gradxform.wrappers.microbatching import microbatch
from gradxform.wrappers.monitoring import (
    MonitorState,
    SnapshotState,
    measure_with_ema,
    monitor,
    snapshot,
)
from gradxform.wrappers.phases import JoinTransformsState, join_transforms
from gradxform.wrappers.privacy import (
    DifferentiallyPrivateAggregateState,
    differentially_private_aggregate,
    dpsgd,
    per_example_global_norm_clip,
    per_example_layer_norm_clip,
)
from gradxform.wrappers.schedule_free_wrapper import schedule_free
from gradxform.wrappers.sharding import ShardedState, cross_replica_mean, shard_optimizer_state
from gradxform.wrappers.sharpness_aware import NormalizeState, SAMState, normalize, sam
from gradxform.wrappers.stateful_hyperparams import (
    InjectStatefulHyperparamsState,
    WrappedSchedule,
    WrappedScheduleState,
    inject_stateful_hyperparams,
)

__all__ = [
    "ApplyEvery",
    "ApplyIfFiniteState",
    "BlockedMatricesState",
    "ConditionFn",
    "ConditionallyMaskState",
    "ConditionallyTransformState",
    "DifferentiallyPrivateAggregateState",
    "DynamicLossScale",
    "DynamicLossScaleState",
    "InjectHyperparamsState",
    "InjectStatefulHyperparamsState",
    "JoinTransformsState",
    "LookaheadParams",
    "LookaheadState",
    "MaskedState",
    "MechanicState",
    "MonitorState",
    "MultiSteps",
    "MultiStepsState",
    "MultiTransformState",
    "NormalizeState",
    "ParamsAverageState",
    "PartitionState",
    "SAMState",
    "ShardedState",
    "ShouldSkipUpdateFunction",
    "SnapshotState",
    "WrappedSchedule",
    "WrappedScheduleState",
    "all_finite",
    "apply_every",
    "apply_if_finite",
    "averaged_params",
    "blocked_matrices",
    "conditionally_mask",
    "conditionally_transform",
    "cross_replica_mean",
    "current_loss_scale",
    "decay_matrices_only",
    "differentially_private_aggregate",
    "dpsgd",
    "dynamic_loss_scale",
    "ema_params",
    "freeze",
    "gradient_accumulation",
    "incremental_update",
    "inject_hyperparams",
    "inject_stateful_hyperparams",
    "join_transforms",
    "lookahead",
    "lookahead_slow_params",
    "masked",
    "measure_with_ema",
    "mechanize",
    "microbatch",
    "monitor",
    "multi_transform",
    "normalize",
    "partition",
    "per_example_global_norm_clip",
    "per_example_layer_norm_clip",
    "periodic_update",
    "sam",
    "schedule_free",
    "selective_transform",
    "shard_optimizer_state",
    "skip_large_updates",
    "skip_not_finite",
    "snapshot",
    "swa_params",
]
