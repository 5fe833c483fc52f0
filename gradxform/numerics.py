"""Optax's top-level numerics: norms with a floor whose gradient is finite at zero, counters
that saturate instead of wrapping, and the moving-average helpers (aliases of
:mod:`gradxform.tree_utils`' functions, under the names Optax gives them at its top level).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from gradxform.tree_utils import tree_norm

__all__ = [
    "global_norm",
    "safe_increment",
    "safe_int32_increment",
    "safe_norm",
    "safe_root_mean_squares",
]


def global_norm(updates: Any) -> jax.Array:
    """The l2 norm of all leaves taken together: ``sqrt(sum_i sum |u_i|^2)``.

    Optax's ``global_norm`` (``optax.tree_utils.tree_norm(updates)``); Optax 0.2.8 also warns
    that it is deprecated, gradxform does not.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> gx.global_norm({"a": jnp.array([3.0]), "b": jnp.array([[4.0]])})  # sqrt(9 + 16)
      Array(5., dtype=float32)
    """
    return tree_norm(updates)


def _abs_square(x: jax.Array) -> jax.Array:
    return (x.conj() * x).real


def safe_norm(
    x: ArrayLike,
    min_norm: ArrayLike,
    ord: int | float | str | None = None,
    axis: int | tuple[int, ...] | None = None,
    keepdims: bool = False,
) -> jax.Array:
    """``max(norm(x), min_norm)``, whose gradient is 0 (not NaN) where the norm is floored.

    ::

        n = ||x||_ord (over axis);   safe_norm = min_norm where n <= min_norm, else n

    ``jnp.maximum(jnp.linalg.norm(x), min_norm)`` differentiates both branches, and the
    norm's gradient at ``x = 0`` is NaN; here the norm is taken of ``x`` with its floored
    entries replaced by ones, so no branch divides by zero.

    Args:
      x: an array.
      min_norm: the floor.
      ord: the order, as in ``jnp.linalg.norm``.
      axis: the axes, as in ``jnp.linalg.norm``.
      keepdims: keep the reduced axes with size 1.

    Returns:
      The floored norm.

    Example:
      >>> import jax, jax.numpy as jnp, gradxform as gx
      >>> jax.grad(lambda x: gx.safe_norm(x, 1e-3))(jnp.zeros(2)).tolist()
      [0.0, 0.0]
    """
    norm = jnp.linalg.norm(x, ord=ord, axis=axis, keepdims=True)
    floored = norm <= min_norm
    stand_in = jnp.where(floored, jnp.ones_like(x), x)
    if not keepdims:
        norm = jnp.squeeze(norm, axis=axis)
        floored = norm <= min_norm
    return jnp.where(
        floored, min_norm, jnp.linalg.norm(stand_in, ord=ord, axis=axis, keepdims=keepdims)
    )


def safe_root_mean_squares(x: ArrayLike, min_rms: ArrayLike) -> jax.Array:
    """``max(sqrt(mean(|x|^2)), min_rms)``, with a gradient of 0 (not NaN) where floored.

    Args:
      x: an array (complex allowed).
      min_rms: the floor.

    Returns:
      The floored root mean square.

    Example:
      >>> import jax, jax.numpy as jnp, gradxform as gx
      >>> x = jnp.array([3.0, 4.0])
      >>> round(float(gx.safe_root_mean_squares(x, 1.0)), 4)  # sqrt((9 + 16) / 2)
      3.5355
      >>> gx.safe_root_mean_squares(x, 10.0), jax.grad(gx.safe_root_mean_squares)(x, 10.0)
      (Array(10., dtype=float32), Array([0., 0.], dtype=float32))
    """
    x = jnp.asarray(x)
    rms = jnp.sqrt(jnp.mean(_abs_square(x)))
    floored = rms <= min_rms
    stand_in = jnp.where(floored, jnp.ones_like(x), x)
    return jnp.where(floored, min_rms, jnp.sqrt(jnp.mean(_abs_square(stand_in))))


def safe_increment(count: ArrayLike) -> jax.Array:
    """``count + 1``, staying at the dtype's largest value instead of overflowing.

    Args:
      count: an integer or floating counter.

    Returns:
      The incremented counter, of ``count``'s dtype.

    Raises:
      ValueError: ``count`` is neither integer nor floating.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> int(gx.safe_increment(jnp.asarray(2**31 - 1, jnp.int32)))
      2147483647
    """
    k = jnp.asarray(count)
    dtype = k.dtype
    if jnp.issubdtype(dtype, jnp.integer):
        largest = jnp.array(jnp.iinfo(dtype).max, dtype)
    elif jnp.issubdtype(dtype, jnp.floating):
        largest = jnp.array(jnp.finfo(dtype).max, dtype)
    else:
        raise ValueError(
            f"safe_increment: `count` must have an integer or floating dtype, got {dtype}"
        )
    return jnp.where(k < largest, k + jnp.array(1, dtype), largest)


safe_int32_increment = safe_increment
