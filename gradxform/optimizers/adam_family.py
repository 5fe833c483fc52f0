"""Adam's family: Adam, AMSGrad, AdamW, Adamax, SparseAdam, as ``torch.optim``'s classes (NAdam
and RAdam are in ``adam_corrected``)."""

from __future__ import annotations

from typing import Any

from gradxform import _validate
from gradxform._base import GradientTransformation
from gradxform._types import MaskOrFn, ScalarOrSchedule
from gradxform.optimizers._links import adam_spec, check_common, decay_link, torch_optimizer
from gradxform.transforms.adam import check_moments, scale_by_adam, scale_by_adamax
from gradxform.transforms.scaling import scale_by_learning_rate
from gradxform.transforms.sparse import scale_by_sparse_adam


def _check_adam(
    who: str,
    learning_rate: Any,
    weight_decay: Any,
    b1: Any,
    b2: Any,
    eps: Any,
    eps_root: Any,
    mu_dtype: Any,
    nu_dtype: Any,
) -> None:
    check_common(who, learning_rate, weight_decay)
    check_moments(who, b1, b2, eps, eps_root)
    _validate.dtype(who, "mu_dtype", mu_dtype)
    _validate.dtype(who, "nu_dtype", nu_dtype)


def _check_nesterov(who: str, nesterov: Any, amsgrad: Any) -> None:
    _validate.boolean(who, "nesterov", nesterov)
    _validate.boolean(who, "amsgrad", amsgrad)
    if nesterov and amsgrad:
        raise ValueError(f"{who}: `nesterov=True` and `amsgrad=True` cannot be combined")


def adam(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any | None = None,
    *,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
    nu_dtype: Any | None = None,
    decoupled_weight_decay: bool = False,
    maximize: bool = False,
) -> GradientTransformation:
    """Adam (Kingma & Ba, 2015), as ``torch.optim.Adam`` (``betas=(b1, b2)``).

    ::

        g <- g + weight_decay * p                     (coupled L2, as torch's Adam)
        m_t = b1 * m_{t-1} + (1 - b1) * g_t
        v_t = b2 * v_{t-1} + (1 - b2) * |g_t|^2       (v <- max(v_max, v) with amsgrad)
        p <- p - lr * (m_t / (1 - b1^t)) / (sqrt(v_t / (1 - b2^t) + eps_root) + eps)

    Args:
      learning_rate: ``lr``, a number or a schedule.
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to the denominator (>= 0).
      eps_root: added inside the root (>= 0).
      mu_dtype: dtype of the first moment.
      nesterov: Optax's NAdam form (``optax.adam(nesterov=True)``, ``optax.nadam``): ``m_t /
        (1 - b1^t)`` becomes ``b1 m_t / (1 - b1^(t+1)) + (1 - b1) g_t / (1 - b1^t)`` (see
        :func:`scale_by_adam`); torch's NAdam is :func:`nadam`. Not with ``amsgrad``.
      weight_decay: coupled L2 penalty (use :func:`adamw` for decoupled decay).
      amsgrad: AMSGrad's running maximum of the second moment.
      nu_dtype: dtype of the second moment (float32 for float16 params).
      decoupled_weight_decay: decay as AdamW does (``p <- p - lr * weight_decay * p``), as
        torch's ``Adam(decoupled_weight_decay=True)``.
      maximize: ascend the objective instead (torch's ``maximize``: the gradient is negated
        first).

    Returns:
      ``chain(add_l2, scale_by_adam, scale_by_learning_rate)`` (the decay after
      ``scale_by_adam`` when decoupled).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt, params = gx.adam(0.1), {"w": jnp.array([1.0, -2.0])}
      >>> updates, _ = opt.update({"w": jnp.array([0.5, -4.0])}, opt.init(params), params)
      >>> [round(u, 4) for u in updates["w"].tolist()]  # the first step is -lr * sign(g)
      [-0.1, 0.1]
    """
    who = "adam"
    _check_adam(who, learning_rate, weight_decay, b1, b2, eps, eps_root, mu_dtype, nu_dtype)
    _check_nesterov(who, nesterov, amsgrad)
    _validate.boolean(who, "decoupled_weight_decay", decoupled_weight_decay)
    decay = decay_link(who, weight_decay)
    more = {"amsgrad": amsgrad, "decoupled_weight_decay": decoupled_weight_decay}
    spec = adam_spec("Adam", learning_rate, b1, b2, eps, weight_decay, more)
    return torch_optimizer(
        who,
        *([] if decoupled_weight_decay else decay),
        scale_by_adam(
            b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov, amsgrad=amsgrad, nu_dtype=nu_dtype
        ),
        *(decay if decoupled_weight_decay else []),
        scale_by_learning_rate(learning_rate),
        maximize=maximize,
        # torch has neither eps_root nor nesterov: with one, no torch param group says what
        # the optimizer does.
        torch_spec=spec if _validate.is_static_zero(eps_root) and not nesterov else None,
    )


def amsgrad(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any | None = None,
    *,
    weight_decay: float = 0.0,
    nu_dtype: Any | None = None,
    maximize: bool = False,
) -> GradientTransformation:
    """AMSGrad (Reddi et al., 2018): :func:`adam` with ``amsgrad=True``.

    ::

        v'_t = max(v'_{t-1}, v_t),   p <- p - lr * m_hat_t / (sqrt(v'_t / (1 - b2^t)) + eps)

    Args:
      learning_rate, b1, b2, eps, eps_root, mu_dtype, weight_decay, nu_dtype, maximize: as in
        :func:`adam`.

    Returns:
      ``adam(..., amsgrad=True)``: ``chain(add_l2, scale_by_adam, scale_by_learning_rate)``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt, params = gx.amsgrad(0.1), {"w": jnp.array([1.0, -2.0])}
      >>> updates, _ = opt.update({"w": jnp.array([0.5, -4.0])}, opt.init(params), params)
      >>> [round(u, 4) for u in updates["w"].tolist()]  # the first step is Adam's, -lr * sign(g)
      [-0.1, 0.1]
    """
    _check_adam("amsgrad", learning_rate, weight_decay, b1, b2, eps, eps_root, mu_dtype, nu_dtype)
    _validate.boolean("amsgrad", "maximize", maximize)
    return adam(
        learning_rate,
        b1,
        b2,
        eps,
        eps_root,
        mu_dtype,
        weight_decay=weight_decay,
        amsgrad=True,
        nu_dtype=nu_dtype,
        maximize=maximize,
    )


def adamw(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any | None = None,
    weight_decay: float = 1e-2,
    mask: MaskOrFn = None,
    *,
    nesterov: bool = False,
    amsgrad: bool = False,
    nu_dtype: Any | None = None,
    maximize: bool = False,
) -> GradientTransformation:
    """AdamW (Loshchilov & Hutter, 2019), as ``torch.optim.AdamW``: decoupled weight decay.

    ::

        p <- p - lr * (m_hat_t / (sqrt(v_hat_t + eps_root) + eps) + weight_decay * p)

    Args:
      learning_rate: ``lr``, a number or a schedule.
      b1, b2, eps, eps_root, mu_dtype, nesterov, amsgrad, nu_dtype, maximize: as in
        :func:`adam` (``nesterov``: Optax's NAdamW, see :func:`gradxform.nadamw`).
      weight_decay: the decoupled decay ``lambda`` (torch's default 1e-2; Optax's is 1e-4).
      mask: which leaves to decay: a tree of bools or a function of params, e.g.
        :func:`gradxform.decay_matrices_only` to leave biases and scales alone.

    Returns:
      ``chain(scale_by_adam, add_decayed_weights, scale_by_learning_rate)``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt, params = gx.adamw(0.1, weight_decay=0.5), {"w": jnp.array([1.0, -2.0])}
      >>> updates, _ = opt.update({"w": jnp.array([0.5, -4.0])}, opt.init(params), params)
      >>> [round(u, 4) for u in updates["w"].tolist()]  # -lr * (sign(g) + weight_decay * p)
      [-0.15, 0.2]
    """
    who = "adamw"
    _check_adam(who, learning_rate, weight_decay, b1, b2, eps, eps_root, mu_dtype, nu_dtype)
    _validate.mask(who, "mask", mask)
    _check_nesterov(who, nesterov, amsgrad)
    more = {"amsgrad": amsgrad, "decoupled_weight_decay": True}
    spec = adam_spec("AdamW", learning_rate, b1, b2, eps, weight_decay, more)
    # A mask is two torch param groups, and torch has no eps_root or nesterov: no one group.
    as_torch = mask is None and _validate.is_static_zero(eps_root) and not nesterov
    return torch_optimizer(
        who,
        scale_by_adam(
            b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov, amsgrad=amsgrad, nu_dtype=nu_dtype
        ),
        *decay_link(who, weight_decay, mask),
        scale_by_learning_rate(learning_rate),
        maximize=maximize,
        torch_spec=spec if as_torch else None,
    )


def adamax(
    learning_rate: ScalarOrSchedule = 2e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    *,
    weight_decay: float = 0.0,
    maximize: bool = False,
) -> GradientTransformation:
    """Adamax (Kingma & Ba, 2015), as ``torch.optim.Adamax``.

    ::

        g <- g + weight_decay * p
        m_t = b1 * m_{t-1} + (1 - b1) * g_t
        u_t = max(b2 * u_{t-1}, |g_t| + eps)
        p <- p - lr * (m_t / (1 - b1^t)) / u_t

    Args:
      learning_rate: ``lr``, a number or a schedule.
      b1, b2, eps: see :func:`scale_by_adamax`.
      weight_decay: coupled L2 penalty.
      maximize: ascend the objective instead (torch's ``maximize``: the gradient is negated
        first).

    Returns:
      ``chain(add_l2, scale_by_adamax, scale_by_learning_rate)``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt, params = gx.adamax(0.1), {"w": jnp.array([1.0, -2.0])}
      >>> updates, _ = opt.update({"w": jnp.array([0.5, -4.0])}, opt.init(params), params)
      >>> [round(u, 4) for u in updates["w"].tolist()]  # m_hat / u = g / |g| on the first step
      [-0.1, 0.1]
    """
    who = "adamax"
    check_common(who, learning_rate, weight_decay)
    check_moments(who, b1, b2, eps)
    return torch_optimizer(
        who,
        *decay_link(who, weight_decay),
        scale_by_adamax(b1, b2, eps),
        scale_by_learning_rate(learning_rate),
        maximize=maximize,
        torch_spec=adam_spec("Adamax", learning_rate, b1, b2, eps, weight_decay),
    )


def sparse_adam(
    learning_rate: ScalarOrSchedule = 1e-3,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    maximize: bool = False,
) -> GradientTransformation:
    """Lazy Adam for sparse gradients, as ``torch.optim.SparseAdam`` (``betas=(b1, b2)``).

    Only the elements whose gradient is not exactly 0 move, and only their moments change::

        m_t = b1 * m_{t-1} + (1 - b1) * g_t        where g_t != 0
        v_t = b2 * v_{t-1} + (1 - b2) * g_t^2      where g_t != 0
        p <- p - lr * sqrt(1 - b2^t) / (1 - b1^t) * m_t / (sqrt(v_t) + eps)   where g_t != 0

    ``t`` counts every update, one with an all-zero gradient included, as torch's step does.
    The dense gradient of an embedding (zeros outside the rows a step looked up) gives torch's
    numbers for the equivalent sparse gradient as long as those rows hold no exact 0: torch
    updates every element its sparse gradient lists, a stored 0 included (see
    :func:`scale_by_sparse_adam`). torch refuses complex params; here each is a (real,
    imaginary) pair, each part with its own moments and its own zero test.

    Args:
      learning_rate: ``lr``, a number or a schedule.
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to ``sqrt(v_t)`` before the bias correction (>= 0).
      maximize: ascend the objective instead (torch's ``maximize``: the gradient is negated
        first).

    Returns:
      ``chain(scale_by_sparse_adam, scale_by_learning_rate)``.

    Example:
      A zero gradient leaves its element (its update is ``-lr * 0``):

      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt, params = gx.sparse_adam(0.1), {"w": jnp.array([1.0, -2.0])}
      >>> updates, _ = opt.update({"w": jnp.array([0.5, 0.0])}, opt.init(params), params)
      >>> [round(u, 4) for u in updates["w"].tolist()]
      [-0.1, -0.0]
    """
    who = "sparse_adam"
    _validate.learning_rate(who, learning_rate)
    check_moments(who, b1, b2, eps)
    return torch_optimizer(
        who,
        scale_by_sparse_adam(b1, b2=b2, eps=eps),
        scale_by_learning_rate(learning_rate),
        maximize=maximize,
        torch_spec=adam_spec("SparseAdam", learning_rate, b1, b2, eps),
    )
