"""The optimizers: each one ``chain`` of transformations, grouped by family.

``sgd`` (momentum), ``adam`` (Adam, AdamW, AMSGrad, Adamax, NAdam), ``rms`` (Adagrad,
RMSprop), ``sign`` (Lion), ``lbfgs`` (L-BFGS). Defaults and hyperparameter names are
PyTorch's where ``torch.optim`` has the optimizer, and given the same hyperparameters each
reproduces it step for step.
"""

from gradxform.optimizers.adam import adam, adamax, adamw, amsgrad, nadam, radam, sparse_adam
from gradxform.optimizers.adam_variants import acprop, ademamix, adopt, madgrad, simplified_ademamix
from gradxform.optimizers.factored import adafactor
from gradxform.optimizers.lbfgs import lbfgs
from gradxform.optimizers.momo import momo, momo_adam
from gradxform.optimizers.muon import muon, muon_with_adamw
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
from gradxform.optimizers.parameter_free import cocob, dog, dowg
from gradxform.optimizers.rms import adadelta, adagrad, rmsprop
from gradxform.optimizers.sgd import asgd, sgd
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
    "dog",
    "dowg",
    "fromage",
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
    "radam",
    "rmsprop",
    "rprop",
    "sgd",
    "sign_sgd",
    "signum",
    "simplified_ademamix",
    "sm3",
    "sparse_adam",
    "yogi",
]
