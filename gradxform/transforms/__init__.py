"""Gradient transformations, one module per family.

``scaling`` (constant factors, learning rates, schedules, zeros, normalisation), ``momentum``
(trace, ema), ``adam`` (Adam, AMSGrad, Adamax), ``nadam``, ``radam``, ``adadelta``, ``rprop``,
``asgd``, ``sparse`` (lazy Adam), ``rms`` (RMSProp, Adagrad), ``sign`` (Lion, sign),
``factored`` (Adafactor's moments), ``muon`` (Newton-Schulz), ``adaptive`` (AdaBelief,
NovoGrad, Yogi), ``adan``, ``optimistic``, ``sm3``, ``polyak``, ``trust_ratio`` (LAMB's and
LARS's ratio, block norms), ``adam_variants`` (ADOPT, ACProp, GaLore's Adam), ``ademamix``,
``madgrad``, ``coin`` (COCOB), ``dog`` (DoG, DoWG), ``momo``, ``hutchinson`` (a diagonal
Hessian estimate),
``noise``, ``decay`` (weight decay), ``clipping``, ``constrain`` (NaN handling, non-negative
params, centralisation), ``complex`` (complex params as real pairs), ``plateau`` (reducing the
step size on a plateau of the loss), ``lbfgs`` (Optax's L-BFGS preconditioner),
``torch_lbfgs`` (torch's whole L-BFGS step) with ``wolfe`` (its strong-Wolfe line search), and
Optax's line searches: ``linesearch`` (backtracking) and ``zoom``. The frontier optimizers'
blocks: ``schedule_free`` (schedule-free averaging), ``distance_adaptive`` (Prodigy) and
``dadaptation`` (D-Adaptation's Adam), ``sophia`` (SophiaG's clipped step and its
Gauss-Newton-Bartlett Hessian estimate), ``galore`` (low-rank projection),
``soap_precondition`` (SOAP's eigenbasis Adam), ``shampoo_precondition`` (Shampoo's Kronecker
factors), ``stepped_decay`` (decay of the stepped params).
"""

from gradxform.transforms.adadelta import ScaleByAdaDeltaState, scale_by_adadelta
from gradxform.transforms.adam import (
    ScaleByAdamaxState,
    ScaleByAdamState,
    ScaleByAmsgradState,
    scale_by_adam,
    scale_by_adamax,
    scale_by_amsgrad,
)
from gradxform.transforms.adam_variants import (
    scale_by_acprop,
    scale_by_adam_raw_eps,
    scale_by_adopt,
)
from gradxform.transforms.adan import ScaleByAdanState, scale_by_adan
from gradxform.transforms.adaptive import (
    ScaleByBeliefState,
    ScaleByNovogradState,
    scale_by_belief,
    scale_by_novograd,
    scale_by_yogi,
)
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
    unitwise_clip,
    unitwise_norm,
)
from gradxform.transforms.coin import COCOBState, scale_by_cocob
from gradxform.transforms.complex import (
    SplitRealAndImaginaryArrays,
    SplitRealAndImaginaryState,
    split_real_and_imaginary,
)
from gradxform.transforms.constrain import (
    ZeroNansState,
    centralize,
    keep_params_nonnegative,
    zero_nans,
)
from gradxform.transforms.dadaptation import ScaleByDAdaptAdamState, scale_by_dadapt_adam
from gradxform.transforms.decay import add_decayed_weights, add_l2
from gradxform.transforms.distance_adaptive import ScaleByProdigyState, scale_by_prodigy
from gradxform.transforms.dog import (
    DoGState,
    DoWGState,
    ScaleByDistanceOverGradientsState,
    scale_by_distance_over_gradients,
    scale_by_dog,
    scale_by_dowg,
)
from gradxform.transforms.factored import (
    ScaleByAdafactorState,
    scale_by_adafactor,
    scale_by_param_block_rms,
)
from gradxform.transforms.factored_rms import FactoredState, scale_by_factored_rms
from gradxform.transforms.galore import GaLoreState, scale_by_galore
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
from gradxform.transforms.nadam import ScaleByNadamState, scale_by_nadam
from gradxform.transforms.noise import AddNoiseState, add_noise
from gradxform.transforms.optimistic import (
    ScaleByOptimisticGradientState,
    scale_by_optimistic_gradient,
)
from gradxform.transforms.plateau import ReduceLROnPlateauState, reduce_on_plateau
from gradxform.transforms.polyak import scale_by_polyak
from gradxform.transforms.radam import scale_by_radam
from gradxform.transforms.rms import (
    ScaleByRmsState,
    ScaleByRmsWithCountState,
    ScaleByRssState,
    ScaleByRStdDevState,
    ScaleByRStdDevWithCountState,
    scale_by_rms,
    scale_by_rss,
    scale_by_stddev,
)
from gradxform.transforms.rprop import ScaleByRpropState, scale_by_rprop
from gradxform.transforms.scaling import (
    ScaleByScheduleState,
    normalize_by_update_norm,
    scale,
    scale_by_learning_rate,
    scale_by_schedule,
    scale_gradient,
    set_to_zero,
)
from gradxform.transforms.schedule_free import (
    ScheduleFreeState,
    scale_by_schedule_free,
    schedule_free_eval_params,
)
from gradxform.transforms.shampoo_precondition import ScaleByShampooState, scale_by_shampoo
from gradxform.transforms.sign import ScaleByLionState, scale_by_lion, scale_by_sign
from gradxform.transforms.sm3 import ScaleBySM3State, scale_by_sm3
from gradxform.transforms.soap_precondition import ScaleBySoapState, scale_by_soap
from gradxform.transforms.sophia import ScaleBySophiaState, gauss_newton_bartlett, scale_by_sophia
from gradxform.transforms.sparse import ScaleBySparseAdamState, scale_by_sparse_adam
from gradxform.transforms.stepped_decay import DecayAfterStepState, decay_after_step
from gradxform.transforms.torch_lbfgs import LbfgsState
from gradxform.transforms.trust_ratio import scale_by_param_block_norm, scale_by_trust_ratio
from gradxform.transforms.zoom import scale_by_zoom_linesearch

__all__ = [
    "AddNoiseState",
    "BacktrackingLinesearchInfo",
    "COCOBState",
    "DecayAfterStepState",
    "DoGState",
    "DoWGState",
    "EmaState",
    "FactoredState",
    "GaLoreState",
    "HutchinsonState",
    "LbfgsState",
    "MadgradState",
    "MomoAdamState",
    "MomoState",
    "ReduceLROnPlateauState",
    "ScaleByAdaDeltaState",
    "ScaleByAdafactorState",
    "ScaleByAdamState",
    "ScaleByAdamaxState",
    "ScaleByAdanState",
    "ScaleByAdemamixState",
    "ScaleByAmsgradState",
    "ScaleByAsgdState",
    "ScaleByBacktrackingLinesearchState",
    "ScaleByBeliefState",
    "ScaleByDAdaptAdamState",
    "ScaleByDistanceOverGradientsState",
    "ScaleByLBFGSState",
    "ScaleByLionState",
    "ScaleByMuonState",
    "ScaleByNadamState",
    "ScaleByNovogradState",
    "ScaleByOptimisticGradientState",
    "ScaleByProdigyState",
    "ScaleByRStdDevState",
    "ScaleByRStdDevWithCountState",
    "ScaleByRmsState",
    "ScaleByRmsWithCountState",
    "ScaleByRpropState",
    "ScaleByRssState",
    "ScaleBySM3State",
    "ScaleByScheduleState",
    "ScaleByShampooState",
    "ScaleBySimplifiedAdEMAMixState",
    "ScaleBySoapState",
    "ScaleBySophiaState",
    "ScaleBySparseAdamState",
    "ScaleByZoomLinesearchState",
    "ScheduleFreeState",
    "SplitRealAndImaginaryArrays",
    "SplitRealAndImaginaryState",
    "TraceState",
    "ZeroNansState",
    "ZoomLinesearchInfo",
    "adaptive_grad_clip",
    "add_decayed_weights",
    "add_l2",
    "add_noise",
    "asgd_averaged_params",
    "centralize",
    "clip",
    "clip_by_block_rms",
    "clip_by_global_norm",
    "decay_after_step",
    "ema",
    "gauss_newton_bartlett",
    "hutchinson_estimator_diag_hessian",
    "keep_params_nonnegative",
    "muon_labels",
    "normalize_by_update_norm",
    "reduce_on_plateau",
    "scale",
    "scale_by_acprop",
    "scale_by_adadelta",
    "scale_by_adafactor",
    "scale_by_adam",
    "scale_by_adam_raw_eps",
    "scale_by_adamax",
    "scale_by_adan",
    "scale_by_ademamix",
    "scale_by_adopt",
    "scale_by_amsgrad",
    "scale_by_asgd",
    "scale_by_backtracking_linesearch",
    "scale_by_belief",
    "scale_by_cocob",
    "scale_by_dadapt_adam",
    "scale_by_distance_over_gradients",
    "scale_by_dog",
    "scale_by_dowg",
    "scale_by_factored_rms",
    "scale_by_galore",
    "scale_by_lbfgs",
    "scale_by_learning_rate",
    "scale_by_lion",
    "scale_by_madgrad",
    "scale_by_muon",
    "scale_by_nadam",
    "scale_by_novograd",
    "scale_by_optimistic_gradient",
    "scale_by_param_block_norm",
    "scale_by_param_block_rms",
    "scale_by_polyak",
    "scale_by_prodigy",
    "scale_by_radam",
    "scale_by_rms",
    "scale_by_rprop",
    "scale_by_rss",
    "scale_by_schedule",
    "scale_by_schedule_free",
    "scale_by_shampoo",
    "scale_by_sign",
    "scale_by_simplified_ademamix",
    "scale_by_sm3",
    "scale_by_soap",
    "scale_by_sophia",
    "scale_by_sparse_adam",
    "scale_by_stddev",
    "scale_by_trust_ratio",
    "scale_by_yogi",
    "scale_by_zoom_linesearch",
    "scale_gradient",
    "schedule_free_eval_params",
    "set_to_zero",
    "split_real_and_imaginary",
    "trace",
    "unitwise_clip",
    "unitwise_norm",
    "value_and_grad_from_state",
    "zero_nans",
]
