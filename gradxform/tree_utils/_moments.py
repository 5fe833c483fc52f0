"""Moving averages of a gradient tree and their bias correction, as Optax computes them.

These are Optax's building blocks (``optax.tree_utils.tree_update_moment``, ...), kept with
Optax's numbers: gradxform's own transformations compute their moments in torch's order (see
``gradxform/_tree.py``), which differs from these in the last bits.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

__all__ = [
    "tree_bias_correction",
    "tree_update_infinity_moment",
    "tree_update_moment",
    "tree_update_moment_per_elem_norm",
]


def _none_is_leaf(x: Any) -> bool:
    return x is None


def _map_moments(leaf_fn, updates: Any, moments: Any) -> Any:
    # A `None` update (a leaf without gradient) keeps no moment.
    return jax.tree.map(
        lambda g, m: None if g is None else leaf_fn(g, m), updates, moments, is_leaf=_none_is_leaf
    )


def tree_update_moment(updates: Any, moments: Any, decay: ArrayLike, order: int) -> Any:
    """The exponential moving average of the ``order``-th power of the updates.

    ::

        m <- (1 - decay) * g^order + decay * m

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> m = {"w": jnp.array([1.0, 1.0])}
      >>> gx.update_moment({"w": jnp.array([1.0, -2.0])}, m, 0.5, 2)  # 0.5 g^2 + 0.5 m
      {'w': Array([1. , 2.5], dtype=float32)}
    """
    return _map_moments(lambda g, m: (1 - decay) * (g**order) + decay * m, updates, moments)


def tree_update_infinity_moment(
    updates: Any, moments: Any, decay: ArrayLike, eps: ArrayLike
) -> Any:
    """The exponentially weighted infinity norm of the updates (Adamax's ``u``).

    ::

        u <- max(|g| + eps, decay * u)

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> u = {"w": jnp.array([3.0, 0.0])}
      >>> gx.update_infinity_moment({"w": jnp.array([1.0, -2.0])}, u, 0.5, 0.0)  # max(|g|, 0.5 u)
      {'w': Array([1.5, 2. ], dtype=float32)}
    """
    return _map_moments(lambda g, u: jnp.maximum(jnp.abs(g) + eps, decay * u), updates, moments)


def _power_of_magnitude(g: jax.Array, order: Any) -> jax.Array:
    if jnp.isrealobj(g):
        return g**order
    half = order / 2
    # An integer exponent traces to integer_pow, a float one to pow: keep Optax's program.
    if float(half).is_integer():
        half = int(half)
    return ((jnp.conj(g) * g).real) ** half


def tree_update_moment_per_elem_norm(
    updates: Any, moments: Any, decay: ArrayLike, order: int
) -> Any:
    """The moving average of ``|g|^order``, ``|g|`` the modulus of each (complex) element.

    ::

        m <- (1 - decay) * |g|^order + decay * m      (g^order for real g)

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> g, m = {"w": jnp.array([3.0 + 4.0j])}, {"w": jnp.zeros(1)}
      >>> gx.update_moment_per_elem_norm(g, m, 0.5, 2)  # 0.5 |g|^2, a real moment
      {'w': Array([12.5], dtype=float32)}
    """
    return _map_moments(
        lambda g, m: (1 - decay) * _power_of_magnitude(g, order) + decay * m, updates, moments
    )


@functools.partial(jax.jit, inline=True)
def tree_bias_correction(moment: Any, decay: ArrayLike, count: ArrayLike) -> Any:
    """A moment divided by ``1 - decay^count``, each leaf keeping its dtype.

    ::

        m_hat = m / (1 - decay^count)

    The correction is computed in the promotion of ``decay`` and ``count`` (at least float32)
    and only then cast to each leaf's dtype: in bfloat16, ``decay^count`` rounds to 1 and the
    correction to 0.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> gx.bias_correction({"w": jnp.array([0.75, -1.5])}, 0.5, 2)  # m / (1 - 0.5^2)
      {'w': Array([ 1., -2.], dtype=float32)}
    """
    correction = 1 - jnp.power(decay, count)
    return jax.tree.map(lambda m: m / correction.astype(m.dtype), moment)
