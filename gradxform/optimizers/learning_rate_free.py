"""Adam with a step size it estimates itself, with the authors' numbers: Prodigy
(``prodigyopt.Prodigy``) and D-Adaptation's AdamW (``dadaptation.DAdaptAdam(decouple=True)``).

Each is ``chain(scale_by_..., scale(-1))``: the block takes the learning rate, which its
estimate of ``d`` depends on, and returns the step to subtract. Complex params are updated as
(real, imaginary) pairs (:func:`gradxform.transforms.complex.real_pairs`), as ``torch``'s
``view_as_real`` would give them to the references.
"""

from __future__ import annotations

import math
from typing import Any

from gradxform._base import GradientTransformation, chain
from gradxform._types import ScalarOrSchedule
from gradxform.transforms.complex import real_pairs
from gradxform.transforms.dadaptation import scale_by_dadapt_adam
from gradxform.transforms.distance_adaptive import check_arguments, scale_by_prodigy
from gradxform.transforms.scaling import scale


def prodigy(
    learning_rate: ScalarOrSchedule = 1.0,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    beta3: float | None = None,
    d0: float = 1e-6,
    d_coef: float = 1.0,
    growth_rate: float = math.inf,
    weight_decay: float = 0.0,
    eps: float = 1e-8,
    safeguard_warmup: bool = False,
    use_bias_correction: bool = False,
) -> GradientTransformation:
    """Prodigy (Mishchenko & Defazio, 2023), as ``prodigyopt.Prodigy`` (its defaults:
    ``decouple=True``, ``slice_p=1``).

    Adam on ``d g`` with a step size ``dlr = d lr c_k`` whose ``d`` estimates the distance to a
    solution (see :func:`gradxform.scale_by_prodigy` for the whole rule)::

        d_{k+1} = min(max(d_max, d_coef r / sum |s|), growth_rate d')   (d_max: the largest)
        x <- x - dlr_k (m / (sqrt(v) + d_{k+1} eps) + weight_decay x)

    ``lr`` is a factor of the estimated step (1 is Prodigy's own; a schedule with 1 as its
    peak is the authors' advice). With ``use_bias_correction=True`` (and ``growth_rate=inf``,
    no step with ``lr = 0``) these are the numbers of ``optax.contrib.prodigy``, which always
    corrects.

    Args:
      learning_rate: a factor of the step size, a number or a schedule.
      b1, b2: Adam's decays, in [0, 1).
      beta3: decay of the estimate's sums, in [0, 1); ``None`` takes ``sqrt(b2)``.
      d0: the initial estimate of ``d`` (> 0).
      d_coef: a factor of every estimate (> 0); the authors' preferred knob.
      growth_rate: the most ``d`` may grow per step (>= 1, ``inf`` for no limit).
      weight_decay: decoupled weight decay, scaled by ``dlr`` (>= 0).
      eps: added to the denominator, times ``d`` (>= 0).
      safeguard_warmup: leave the learning rate out of the estimate's denominator.
      use_bias_correction: Adam's bias correction ``c_k = sqrt(1 - b2^(k+1)) / (1 -
        b1^(k+1))`` in ``dlr`` (off: 1).

    Returns:
      ``chain(scale_by_prodigy, scale(-1))``; ``update`` needs ``params`` and ``init`` the
      real initial params. Mishchenko & Defazio, "Prodigy: An Expeditiously Adaptive
      Parameter-Free Learner", ICML 2024 (arXiv:2306.06101).

    Example:
      The first step uses ``d_0``: ``-d_0 (1 - b1) g / (sqrt(1 - b2) |g|)``; then ``d`` grows:

      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt, params = gx.prodigy(), {"w": jnp.zeros(2)}
      >>> grads, state = {"w": jnp.array([0.5, -4.0])}, opt.init(params)
      >>> updates, state = opt.update(grads, state, params)
      >>> [round(u / 1e-6, 4) for u in updates["w"].tolist()]  # in units of d_0 = 1e-6
      [-3.1623, 3.1623]
      >>> updates, state = opt.update(grads, state, gx.apply_updates(params, updates))
      >>> round(float(state[0].d) / 1e-6, 4)  # prodigyopt's, in float64
      1.5815
    """
    options: dict[str, Any] = {
        "b1": b1,
        "b2": b2,
        "beta3": beta3,
        "d0": d0,
        "d_coef": d_coef,
        "growth_rate": growth_rate,
        "weight_decay": weight_decay,
        "eps": eps,
        "safeguard_warmup": safeguard_warmup,
        "use_bias_correction": use_bias_correction,
    }
    check_arguments("prodigy", learning_rate=learning_rate, **options)
    block = scale_by_prodigy(learning_rate, **options)
    return real_pairs(chain(block, scale(-1.0)))


def dadapt_adamw(
    learning_rate: ScalarOrSchedule = 1.0,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    d0: float = 1e-6,
    growth_rate: float = math.inf,
    use_bias_correction: bool = False,
) -> GradientTransformation:
    """D-Adaptation's AdamW (Defazio & Mishchenko, 2023), as
    ``dadaptation.DAdaptAdam(decouple=True)`` (its defaults otherwise: no bias correction,
    ``layer_scale=1``).

    Adam whose first moment accumulates ``dlr g``, ``dlr = d lr c_k``, with ``d`` estimated
    from sums over the whole tree (see :func:`gradxform.scale_by_dadapt_adam`)::

        d_{k+1} = max(d_k, min(r / ((1 - sqrt(b2)) sum |s|), growth_rate d_k))
        x <- x - m / (sqrt(v) + eps) - weight_decay dlr_k x

    ``lr`` is a factor of the estimated step (1 is D-Adaptation's own). With
    ``use_bias_correction=True`` (and no step with ``lr = 0``) these are the numbers of
    ``optax.contrib.dadapt_adamw``, which always corrects.

    Args:
      learning_rate: a factor of the step size, a number or a schedule.
      b1, b2: Adam's decays, in [0, 1).
      eps: added to the root of the second moment (>= 0).
      weight_decay: decoupled weight decay, scaled by ``dlr`` (>= 0).
      d0: the initial estimate of ``d`` (> 0).
      growth_rate: the most ``d`` may grow per step (>= 1, ``inf`` for no limit).
      use_bias_correction: Adam's bias correction ``c_k = sqrt(1 - b2^(k+1)) / (1 -
        b1^(k+1))`` in ``dlr`` (the reference's option; off: 1).

    Returns:
      ``chain(scale_by_dadapt_adam, scale(-1))``; ``update`` needs ``params`` when
      ``weight_decay`` may be nonzero. Defazio & Mishchenko, "Learning-Rate-Free Learning by
      D-Adaptation", ICML 2023.

    Example:
      The first step uses ``d_0``: ``-d_0 (1 - b1) g / (sqrt(1 - b2) |g|)``; then ``d`` grows:

      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt, params = gx.dadapt_adamw(), {"w": jnp.zeros(2)}
      >>> grads, state = {"w": jnp.array([0.5, -4.0])}, opt.init(params)
      >>> updates, state = opt.update(grads, state, params)
      >>> [round(u / 1e-6, 4) for u in updates["w"].tolist()]  # in units of d_0 = 1e-6
      [-3.1623, 3.1623]
      >>> updates, state = opt.update(grads, state, gx.apply_updates(params, updates))
      >>> round(float(state[0].d) / 1e-6, 4)  # dadaptation's, in float64
      15.8153
    """
    options: dict[str, Any] = {
        "b1": b1,
        "b2": b2,
        "eps": eps,
        "weight_decay": weight_decay,
        "d0": d0,
        "growth_rate": growth_rate,
        "use_bias_correction": use_bias_correction,
    }
    check_arguments("dadapt_adamw", learning_rate=learning_rate, **options)
    block = scale_by_dadapt_adam(learning_rate, **options)
    return real_pairs(chain(block, scale(-1.0)))
