"""Arithmetic on whole trees, as Optax's ``optax.tree_utils`` computes it.

Each function maps a leaf-wise operation over the leaves (``None`` is an empty subtree, as in
JAX) or reduces all leaves to one scalar. Unlike gradxform's internal tree arithmetic, results
take JAX's promotion of the inputs, exactly as Optax's do, so that code moving from
``optax.tree_utils`` gets the same numbers.
"""

from __future__ import annotations

import functools
import operator
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike, DTypeLike

from gradxform import _validate

__all__ = [
    "tree_add",
    "tree_add_scale",
    "tree_allclose",
    "tree_batch_shape",
    "tree_clip",
    "tree_conj",
    "tree_div",
    "tree_full_like",
    "tree_max",
    "tree_min",
    "tree_mul",
    "tree_norm",
    "tree_ones_like",
    "tree_real",
    "tree_scale",
    "tree_size",
    "tree_sub",
    "tree_sum",
    "tree_vdot",
    "tree_where",
    "tree_zeros_like",
]


def tree_add(tree_x: Any, tree_y: Any, *other_trees: Any) -> Any:
    """``x + y (+ ...)`` leaf by leaf, for two or more trees of one structure."""
    trees = (tree_x, tree_y, *other_trees)
    return jax.tree.map(lambda *leaves: functools.reduce(operator.add, leaves), *trees)


def tree_sub(tree_x: Any, tree_y: Any) -> Any:
    """``x - y`` leaf by leaf."""
    return jax.tree.map(operator.sub, tree_x, tree_y)


def tree_mul(tree_x: Any, tree_y: Any) -> Any:
    """``x * y`` leaf by leaf."""
    return jax.tree.map(operator.mul, tree_x, tree_y)


def tree_div(tree_x: Any, tree_y: Any) -> Any:
    """``x / y`` leaf by leaf."""
    return jax.tree.map(operator.truediv, tree_x, tree_y)


def tree_scale(scalar: ArrayLike, tree: Any) -> Any:
    """``scalar * x`` for every leaf ``x``."""
    return jax.tree.map(lambda x: scalar * x, tree)


def tree_add_scale(tree_x: Any, scalar: ArrayLike, tree_y: Any) -> Any:
    """``x + scalar * y`` leaf by leaf; a ``None`` leaf of ``tree_x`` stays ``None``."""
    scalar = jnp.asarray(scalar)
    return jax.tree.map(
        lambda x, y: None if x is None else x + scalar * y,
        tree_x,
        tree_y,
        is_leaf=lambda x: x is None,
    )


def _leaf_vdot(a: ArrayLike, b: ArrayLike) -> jax.Array:
    # A contraction over every axis rather than `jnp.vdot`, which flattens its inputs first
    # (an all-gather on a sharded leaf, an error under explicit sharding).
    a, b = jnp.asarray(a), jnp.asarray(b)
    if jnp.iscomplexobj(a):
        a = jnp.conj(a)
    mesh = jax.typeof(a).sharding.mesh
    replicated = jax.sharding.NamedSharding(mesh, jax.P()) if mesh.are_all_axes_explicit else None
    return jnp.tensordot(a, b, a.ndim, precision=jax.lax.Precision.HIGHEST, out_sharding=replicated)


def tree_vdot(tree_x: Any, tree_y: Any) -> ArrayLike:
    """The inner product ``sum_i sum(conj(x_i) * y_i)``, at the highest matmul precision.

    Example:
      >>> import jax.numpy as jnp
      >>> from gradxform import tree_utils
      >>> tree_utils.tree_vdot({"a": jnp.array([1.0, 2.0])}, {"a": jnp.array([3.0, 4.0])})
      Array(11., dtype=float32)
    """
    products = jax.tree.map(_leaf_vdot, tree_x, tree_y)
    return jax.tree.reduce(operator.add, products, initializer=0)


def tree_sum(tree: Any, associative_reduction: bool = False) -> ArrayLike:
    """The sum of every element of every leaf (``0`` for a tree without leaves).

    Args:
      tree: a tree.
      associative_reduction: add the leaves' sums as a balanced tree (``jax.tree.
        reduce_associative``) rather than left to right: the same value up to rounding, and
        a smaller program for trees of many leaves.
    """
    _validate.boolean("tree_sum", "associative_reduction", associative_reduction)
    sums = jax.tree.map(jnp.sum, tree)
    if associative_reduction:
        return jax.tree.reduce_associative(operator.add, sums, identity=0)
    return jax.tree.reduce(operator.add, sums, initializer=0)


def _reduce_nonempty(tree: Any, per_leaf, combine, start: float) -> ArrayLike:
    # Leaves without elements have no max or min: they are left out.
    parts = jax.tree.map(lambda x: None if jnp.size(x) == 0 else per_leaf(x), tree)
    return jax.tree.reduce(combine, parts, initializer=start)


def tree_max(tree: Any) -> ArrayLike:
    """The largest element over all leaves (``-inf`` when there is none)."""
    return _reduce_nonempty(tree, jnp.max, jnp.maximum, -float("inf"))


def tree_min(tree: Any) -> ArrayLike:
    """The smallest element over all leaves (``inf`` when there is none)."""
    return _reduce_nonempty(tree, jnp.min, jnp.minimum, float("inf"))


def tree_size(tree: Any) -> int:
    """The number of elements over all leaves."""
    return sum(jnp.size(leaf) for leaf in jax.tree.leaves(tree))


def tree_conj(tree: Any) -> Any:
    """The complex conjugate of every leaf."""
    return jax.tree.map(jnp.conj, tree)


def tree_real(tree: Any) -> Any:
    """The real part of every leaf."""
    return jax.tree.map(jnp.real, tree)


def _abs_square(x: jax.Array) -> jax.Array:
    return jnp.square(x.real) + jnp.square(x.imag)


_ORDERS = (None, 1, 2, jnp.inf, "inf", "infinity")


def tree_norm(tree: Any, ord: int | str | float | None = None, squared: bool = False) -> jax.Array:
    """The vector norm of all leaves taken together.

    ::

        ord=None or 2:  sqrt(sum_i sum |x_i|^2)
        ord=1:          sum_i sum |x_i|
        ord=inf:        max_i max |x_i|

    Args:
      tree: a tree.
      ord: ``None``, 1, 2, ``inf`` (or ``"inf"``, ``"infinity"``).
      squared: return the norm squared.

    Returns:
      A scalar array.

    Raises:
      ValueError: another ``ord``.
    """
    _validate.choice("tree_norm", "ord", ord, _ORDERS)
    _validate.boolean("tree_norm", "squared", squared)
    if ord is None or ord == 2:
        total = tree_sum(jax.tree.map(_abs_square, tree))
        return jnp.array(total if squared else jnp.sqrt(total))
    if ord == 1:
        norm = tree_sum(jax.tree.map(jnp.abs, tree))
    else:
        norm = tree_max(jax.tree.map(jnp.abs, tree))
    return jnp.array(_abs_square(jnp.asarray(norm)) if squared else norm)


def tree_batch_shape(tree: Any, shape: tuple[int, ...] = ()) -> Any:
    """Every leaf broadcast to ``(*shape, *leaf.shape)``: leading batch axes."""
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (*shape, *jnp.shape(x))), tree)


def tree_zeros_like(tree: Any, dtype: DTypeLike | None = None) -> Any:
    """Zeros shaped like every leaf, in ``dtype`` or the leaf's dtype."""
    return jax.tree.map(lambda x: jnp.zeros_like(x, dtype=dtype), tree)


def tree_ones_like(tree: Any, dtype: DTypeLike | None = None) -> Any:
    """Ones shaped like every leaf, in ``dtype`` or the leaf's dtype."""
    return jax.tree.map(lambda x: jnp.ones_like(x, dtype=dtype), tree)


def tree_full_like(tree: Any, fill_value: ArrayLike, dtype: DTypeLike | None = None) -> Any:
    """``fill_value`` shaped like every leaf, in ``dtype`` or the leaf's dtype."""
    return jax.tree.map(lambda x: jnp.full_like(x, fill_value, dtype=dtype), tree)


def tree_clip(
    tree: Any, min_value: ArrayLike | None = None, max_value: ArrayLike | None = None
) -> Any:
    """Every leaf clipped to ``[min_value, max_value]`` (``None``: no bound on that side)."""
    return jax.tree.map(lambda x: jnp.clip(x, min_value, max_value), tree)


def tree_where(condition: ArrayLike, tree_x: Any, tree_y: Any) -> Any:
    """``where(condition, x, y)`` leaf by leaf, with one ``condition`` for every leaf."""
    return jax.tree.map(lambda x, y: jnp.where(condition, x, y), tree_x, tree_y)


def tree_allclose(
    a: Any, b: Any, rtol: ArrayLike = 1e-05, atol: ArrayLike = 1e-08, equal_nan: bool = False
) -> Any:
    """Whether every leaf pair is ``jnp.allclose``: ``|a - b| <= atol + rtol * |b|``."""
    close = jax.tree.leaves(
        jax.tree.map(
            lambda x, y: jnp.allclose(x, y, rtol=rtol, atol=atol, equal_nan=equal_nan), a, b
        )
    )
    return functools.reduce(operator.and_, close, True)
