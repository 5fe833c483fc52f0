"""Hutchinson's estimator of the Hessian's diagonal, with Optax's random numbers.

``diag(H) = E[z * (H z)]`` for Rademacher ``z`` (entries +-1); one sample per update, its
Hessian-vector product taken by forward-over-reverse differentiation of the loss.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradxform import _checks, _tree
from gradxform._base import GradientTransformation, expect_state, require_params


class HutchinsonState(NamedTuple):
    """``key``: the random key of the next sample.

    Example:
      >>> import jax, jax.numpy as jnp, gradxform as gx
      >>> state = gx.hutchinson_estimator_diag_hessian(jax.random.key(1)).init(jnp.zeros(2))
      >>> jax.random.key_data(state.key)
      Array([0, 1], dtype=uint32)
    """

    key: jax.Array


def _check_key(who: str, key: Any) -> None:
    if key is None:
        return
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise TypeError(f"{who}: `random_seed` must be one key, got keys of shape {key.shape}")
        return
    if not (
        isinstance(key, np.ndarray | jax.Array)
        and key.dtype == np.uint32
        and tuple(key.shape) == (2,)
    ):
        raise TypeError(
            f"{who}: `random_seed` must be None or a key (`jax.random.PRNGKey(seed)` or "
            f"`jax.random.key(seed)`), got {key!r}"
        )


def hutchinson_estimator_diag_hessian(random_seed: jax.Array | None = None):
    """The Hessian's diagonal by Hutchinson's estimator, as Optax's (``optax.contrib``).

    ::

        z ~ Rademacher (one key per leaf, split from the state's key)
        u = z * (H z),   H z = d/de grad(obj_fn)(params + e z) at e = 0

    The incoming updates are ignored (only checked against the params): the transformation
    returns the estimate, an unbiased one with a high variance. Its ``update`` needs
    ``params`` and ``obj_fn=`` (the loss as a function of the params).

    Args:
      random_seed: the first key; ``None`` takes ``jax.random.PRNGKey(0)``, as Optax does.

    Returns:
      A transformation whose state is :class:`HutchinsonState`. Hutchinson, "A stochastic
      estimator of the trace of the influence matrix for Laplacian smoothing splines", 1989;
      used by Sophia (Liu et al., 2023).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> loss = lambda p: jnp.sum(jnp.array([1.0, 3.0]) * p**2)  # H = diag(2, 6)
      >>> tx, params = gx.hutchinson_estimator_diag_hessian(), jnp.zeros(2)
      >>> tx.update(params, tx.init(params), params, obj_fn=loss)[0]  # z H z = H for a diagonal H
      Array([2., 6.], dtype=float32)
    """
    who = "hutchinson_estimator_diag_hessian"
    _check_key(who, random_seed)

    def init_fn(params):
        del params
        key = jax.random.PRNGKey(0) if random_seed is None else random_seed
        return HutchinsonState(key=jnp.array(key, copy=True))

    def update_fn(updates, state, params=None, obj_fn=None, **extra_args):
        del extra_args
        expect_state(who, state, HutchinsonState)
        require_params(who, params, "the Hessian is taken at the params")
        _checks.check_updates(who, updates, params, "param", inexact=False)
        if obj_fn is None:
            raise ValueError(f"{who} needs `obj_fn=`, the loss as a function of the params")
        key, subkey = jax.random.split(state.key)
        leaves, treedef = jax.tree.flatten(params)
        keys = jax.random.split(subkey, treedef.num_leaves)
        lowest = min(
            (jnp.result_type(x) for x in leaves), key=lambda d: jnp.finfo(d).bits, default=None
        )
        signs = treedef.unflatten(
            [
                jax.random.rademacher(k, jnp.shape(x), jnp.float32).astype(lowest)
                for k, x in zip(keys, leaves, strict=True)
            ]
        )
        hvp = jax.jvp(jax.grad(obj_fn), (params,), (signs,))[1]
        estimate = jax.tree.map(lambda h, z: (h * z).astype(_tree.update_dtype(h)), hvp, signs)
        return estimate, HutchinsonState(key=key)

    return GradientTransformation(init_fn, update_fn)
