"""Factored optimizers: Adafactor, as ``torch.optim.Adafactor``.

Optax's Adafactor (other numbers) is the chain given in
:func:`gradxform.scale_by_factored_rms`'s docstring.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from gradxform import _tree, _validate
from gradxform._base import GradientTransformation
from gradxform._tree import path_name
from gradxform._types import ScalarOrSchedule, Schedule
from gradxform.optimizers._links import check_common, decay_link, torch_optimizer
from gradxform.transforms.clipping import clip_by_block_rms
from gradxform.transforms.factored import scale_by_adafactor, scale_by_param_block_rms
from gradxform.transforms.scaling import scale_by_learning_rate, scale_by_schedule


def _check_eps_pair(who: str, eps: Any) -> tuple[Any, Any]:
    """torch's ``eps=(eps1, eps2)``: ``eps1`` None or >= 0, ``eps2`` >= 0."""
    if not (isinstance(eps, tuple | list) and len(eps) == 2):
        raise TypeError(f"{who}: `eps` must be a pair (eps1, eps2), got {eps!r}")
    eps1, eps2 = eps
    try:
        if eps1 is not None:
            _validate.non_negative(who, "eps[0]", eps1)
        _validate.non_negative(who, "eps[1]", eps2)
    except (TypeError, ValueError) as error:
        raise type(error)(
            f"{error}, in `eps` = {eps!r} (eps1: None for the dtype's epsilon, or >= 0; eps2: >= 0)"
        ) from None
    return eps1, eps2


def _relative_step_over_lr(learning_rate: ScalarOrSchedule) -> Schedule:
    """``k -> min(1, 1 / (lr_k * sqrt(k + 1)))``: torch's relative step size
    ``rho_t = min(lr, 1 / sqrt(t))`` divided by ``lr``, for ``lr = 0`` too (then 1)."""

    def factor(count: ArrayLike) -> jax.Array:
        lr = learning_rate(count) if callable(learning_rate) else learning_rate
        steps = jnp.asarray(count).astype(_tree.default_float_dtype()) + 1
        return jnp.minimum(1.0, 1.0 / (lr * jnp.sqrt(steps)))

    return factor


def _real_params_only(who: str, opt: GradientTransformation) -> GradientTransformation:
    """``opt`` whose ``init`` refuses complex params, as torch's optimizer does."""

    def init_fn(params):
        for path, leaf in jax.tree_util.tree_leaves_with_path(params):
            dtype = jnp.result_type(leaf)
            if jnp.issubdtype(dtype, jnp.complexfloating):
                raise TypeError(
                    f"{who}: parameter {path_name(path)} is complex ({dtype}); "
                    "torch.optim.Adafactor does not support complex parameters, and neither "
                    f"does {who}. To update the real and imaginary parts as two real "
                    f"parameters, wrap it: gradxform.split_real_and_imaginary({who}(...))."
                )
        return opt.init(params)

    return GradientTransformation(init_fn, opt.update)


def adafactor(
    learning_rate: ScalarOrSchedule = 1e-2,
    *,
    beta2_decay: float = -0.8,
    eps: tuple[float | None, float] = (None, 1e-3),
    d: float = 1.0,
    weight_decay: float = 0.0,
    maximize: bool = False,
) -> GradientTransformation:
    """Adafactor (Shazeer & Stern, 2018), as ``torch.optim.Adafactor``.

    With ``U_t`` the factored preconditioned gradient of :func:`scale_by_adafactor` (the last
    two axes of every leaf of rank >= 2 factored; vectors and scalars not) and ``RMS`` taken
    over the elements of one leaf::

        U'_t = U_t / max(1, RMS(U_t) / d)                          (clipping)
        rho_t = min(lr_t, 1 / sqrt(t))                              (relative step size)
        p <- p - rho_t * max(eps2, RMS(p)) * U'_t - lr_t * weight_decay * p

    which is torch's ``p *= 1 - lr * weight_decay`` followed by
    ``p -= max(eps2, RMS(p_before)) * rho_t * U'_t``.

    Complex params are refused, as torch refuses them (wrap the optimizer in
    :func:`gradxform.split_real_and_imaginary` to update their two parts as real numbers).
    torch also refuses sparse gradients; here a gradient that is not an array of its param's
    shape (a ``jax.experimental.sparse`` matrix, say) fails the check of the updates' tree.

    Args:
      learning_rate: ``lr``, a number or a schedule: the cap of the relative step size and
        the factor of the weight decay (torch's default 1e-2, the paper's cap).
      beta2_decay: the exponent of the second-moment decay ``1 - t^beta2_decay`` (<= 0).
      eps: ``(eps1, eps2)``: ``eps1`` floors the second moment (``None``: the machine epsilon
        of each param's dtype), ``eps2`` the parameter scale.
      d: the clipping threshold on the RMS of the update (>= 1).
      weight_decay: the decoupled decay, times ``lr`` (>= 0).
      maximize: ascend the objective instead (torch's ``maximize``: the gradient is negated
        first).

    Returns:
      ``chain(scale_by_adafactor, clip_by_block_rms(d), scale_by_param_block_rms(eps2),
      scale_by_schedule(rho_t / lr_t), add_decayed_weights, scale_by_learning_rate)``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt = gx.adafactor(0.1)
      >>> params = {"w": jnp.ones((2, 3)), "b": jnp.ones(3)}
      >>> updates, _ = opt.update(params, opt.init(params), params)
      >>> [round(u, 6) for u in updates["w"].ravel().tolist()]  # min(lr, 1) * RMS(p) * g / |g|
      [-0.1, -0.1, -0.1, -0.1, -0.1, -0.1]

    References:
      Shazeer & Stern, *Adafactor: Adaptive Learning Rates with Sublinear Memory Cost*, 2018
      (https://arxiv.org/abs/1804.04235).
    """
    who = "adafactor"
    check_common(who, learning_rate, weight_decay)
    _validate.number(who, "beta2_decay", beta2_decay, high=0)
    eps1, eps2 = _check_eps_pair(who, eps)
    _validate.at_least(who, "d", d, 1)
    opt = torch_optimizer(
        who,
        scale_by_adafactor(beta2_decay, eps1=eps1),
        clip_by_block_rms(d),
        scale_by_param_block_rms(eps2),
        scale_by_schedule(_relative_step_over_lr(learning_rate)),
        *decay_link(who, weight_decay),
        scale_by_learning_rate(learning_rate),
        maximize=maximize,
    )
    return _real_params_only(who, opt)
