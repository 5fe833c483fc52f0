"""The optimizers: each one ``chain`` of transformations, grouped by family.

torch.optim's, with torch's defaults and numbers: ``sgd_family`` (SGD, ASGD), ``adam_family``
(Adam, AdamW, AMSGrad, Adamax, SparseAdam), ``adam_corrected`` (NAdam, RAdam), ``rms``
(Adagrad, Adadelta, RMSprop), ``sign`` (Lion, Rprop), ``factored`` (Adafactor),
``orthogonalized`` (Muon), ``quasi_newton`` (L-BFGS). Optax's, with Optax's numbers:
``optax_adam`` (NAdamW, AdamaxW), ``optax_adaptive`` (AdaBelief, Adan, NovoGrad, Yogi, the
optimistic methods), ``optax_sgd`` (noisy, sign and Polyak SGD, Signum, SM3), ``trust_ratio``
(LAMB, LARS, Fromage), and from Optax's contrib ``adam_variants`` (AdEMAMix, ADOPT, ACProp,
MADGRAD), ``parameter_free`` (DoG, DoWG, COCOB), ``model_based`` (MoMo). ``_links`` holds what
the torch-named ones share (``maximize``, complex params as real pairs, the torch record).
Their authors' own, with the authors' numbers: ``schedule_free`` (schedule-free SGD and AdamW),
``learning_rate_free`` (Prodigy, D-Adaptation's AdamW), ``second_order`` (Sophia), ``low_rank``
(GaLore), ``eigenbasis`` (SOAP) and ``kronecker`` (Shampoo), as pytorch-optimizer computes
them.
"""

from gradxform.optimizers.adam_corrected import nadam, radam
from gradxform.optimizers.adam_family import adam, adamax, adamw, amsgrad, sparse_adam
from gradxform.optimizers.adam_variants import acprop, ademamix, adopt, madgrad, simplified_ademamix
from gradxform.optimizers.eigenbasis import soap
from gradxform.optimizers.factored import adafactor
from gradxform.optimizers.kronecker import shampoo
from gradxform.optimizers.learning_rate_free import dadapt_adamw, prodigy
from gradxform.optimizers.low_rank import galore, galore_adamw
from gradxform.optimizers.model_based import momo, momo_adam
from gradxform.optimizers.optax_adam import adamaxw, nadamw
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
from gradxform.optimizers.orthogonalized import muon, muon_with_adamw
from gradxform.optimizers.parameter_free import cocob, dog, dowg
from gradxform.optimizers.quasi_newton import lbfgs
from gradxform.optimizers.rms import adadelta, adagrad, rmsprop
from gradxform.optimizers.schedule_free import schedule_free_adamw, schedule_free_sgd
from gradxform.optimizers.second_order import sophia
from gradxform.optimizers.sgd_family import asgd, sgd
from gradxform.optimizers.sign import lion, rprop
from gradxform.optimizers.trust_ratio import fromage, lamb, lars

__all__ = [
    "acprop",
    "adabelief",
    "adadelta",
    "adafactor",
    "adagrad",
    "adam",
    "adamax",
    "adamaxw",
    "adamw",
    "adan",
    "ademamix",
    "adopt",
    "amsgrad",
    "asgd",
    "cocob",
    "dadapt_adamw",
    "dog",
    "dowg",
    "fromage",
    "galore",
    "galore_adamw",
    "lamb",
    "lars",
    "lbfgs",
    "lion",
    "madgrad",
    "momo",
    "momo_adam",
    "muon",
    "muon_with_adamw",
    "nadam",
    "nadamw",
    "noisy_sgd",
    "novograd",
    "optimistic_adam",
    "optimistic_adam_v2",
    "optimistic_gradient_descent",
    "polyak_sgd",
    "prodigy",
    "radam",
    "rmsprop",
    "rprop",
    "schedule_free_adamw",
    "schedule_free_sgd",
    "sgd",
    "shampoo",
    "sign_sgd",
    "signum",
    "simplified_ademamix",
    "sm3",
    "soap",
    "sophia",
    "sparse_adam",
    "yogi",
]
