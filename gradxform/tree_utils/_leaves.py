"""Trees of dtypes and of random numbers: casting leaves, reading their dtype, random leaves
shaped like them (Optax's ``optax.tree_utils`` casting and random helpers)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from gradxform import _validate

__all__ = [
    "tree_cast",
    "tree_cast_like",
    "tree_dtype",
    "tree_random_like",
    "tree_split_key_like",
    "tree_unwrap_random_key_data",
]


def tree_cast(tree: Any, dtype: DTypeLike | None) -> Any:
    """Every leaf cast to ``dtype``; ``dtype=None`` returns the tree as it is."""
    if dtype is None:
        return tree
    return jax.tree.map(lambda x: x.astype(dtype), tree)


def tree_cast_like(tree: Any, other_tree: Any) -> Any:
    """Every leaf cast to the dtype of the matching leaf of ``other_tree`` (when it has one)."""
    return jax.tree.map(
        lambda x, other: x.astype(other.dtype) if hasattr(other, "dtype") else x, tree, other_tree
    )


def _dtype_order(a: Any, b: Any) -> tuple[Any, Any]:
    """``(lower, higher)``: the dtype that promotes to the other first."""
    promoted = jnp.promote_types(a, b)
    if promoted == a:
        return b, a
    if promoted == b:
        return a, b
    raise ValueError(
        f"tree_dtype: the dtypes {a} and {b} are not ordered: neither promotes to the other"
    )


_HANDLERS = (None, "promote", "highest", "lowest")


def tree_dtype(tree: Any, mixed_dtype_handler: str | None = None) -> DTypeLike:
    """The dtype of the tree's leaves.

    Args:
      tree: a tree (without leaves: JAX's default dtype of an empty array).
      mixed_dtype_handler: what to do when leaves differ: ``None`` raises ``ValueError``;
        ``"promote"`` gives their promotion (``jnp.promote_types``); ``"highest"`` and
        ``"lowest"`` give the leaf dtype that every other promotes to (or from), and raise
        ``ValueError`` when two dtypes are unordered (int32 and uint32).

    Returns:
      A dtype.
    """
    _validate.choice("tree_dtype", "mixed_dtype_handler", mixed_dtype_handler, _HANDLERS)
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.asarray(leaves).dtype
    dtypes = [jnp.asarray(x).dtype for x in leaves]
    if mixed_dtype_handler is None:
        paths = jax.tree_util.tree_leaves_with_path(tree)
        wrong = [
            f"Expected dtype={dtypes[0]} for {jax.tree_util.keystr(p)} but got {d}."
            for (p, _), d in zip(paths, dtypes, strict=True)
            if d != dtypes[0]
        ]
        if wrong:
            raise ValueError("tree_dtype: the leaves' dtypes differ.\n" + "\n".join(wrong))
        return dtypes[0]
    if mixed_dtype_handler == "promote":
        return functools.reduce(jnp.promote_types, dtypes)
    pick = 1 if mixed_dtype_handler == "highest" else 0
    return functools.reduce(lambda a, b: _dtype_order(a, b)[pick], dtypes)


def tree_split_key_like(rng_key: jax.Array, target_tree: Any) -> Any:
    """One key per leaf of ``target_tree`` (``jax.random.split`` of ``rng_key``), in a tree of
    its structure."""
    treedef = jax.tree.structure(target_tree)
    return jax.tree.unflatten(treedef, list(jax.random.split(rng_key, treedef.num_leaves)))


def tree_random_like(
    rng_key: jax.Array,
    target_tree: Any,
    sampler: Callable[..., Any] = jax.random.normal,
    dtype: DTypeLike | None = None,
) -> Any:
    """Random leaves shaped like ``target_tree``'s: ``sampler(key_i, shape_i, dtype)``.

    The keys are :func:`tree_split_key_like`'s; each leaf is drawn with the sharding of its
    target when ``sampler`` takes ``out_sharding``.

    Args:
      rng_key: the key.
      target_tree: a tree of arrays.
      sampler: ``sampler(key, shape, dtype[, out_sharding])``, ``jax.random.normal`` by default.
      dtype: the dtype to draw (by default each target leaf's).

    Returns:
      A tree of random arrays.
    """
    _validate.function("tree_random_like", "sampler", sampler)
    keys = tree_split_key_like(rng_key, target_tree)
    try:
        placed = "out_sharding" in inspect.signature(sampler).parameters
    except (TypeError, ValueError):
        placed = False

    def draw(leaf, key):
        kind = dtype or leaf.dtype
        if placed:
            return sampler(key, leaf.shape, kind, out_sharding=jax.typeof(leaf).sharding)
        return sampler(key, leaf.shape, kind)

    return jax.tree.map(draw, target_tree, keys)


def tree_unwrap_random_key_data(input_tree: Any) -> Any:
    """Typed random keys (``jax.random.key``) replaced by their raw data
    (``jax.random.key_data``), so that a tree of keys can be compared as numbers."""

    def unwrap(x):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.key_data(x)
        return x

    return jax.tree.map(unwrap, input_tree)
