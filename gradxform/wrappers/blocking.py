"""Blocking: large matrices presented to a transformation as tuples of smaller blocks.

:func:`blocked_matrices` is Distributed Shampoo's blocking (Anil et al., 2020; Shi et al.,
2023) as a wrapper of any transformation: a matrix preconditioner whose cost grows with the
cube of a dimension (an eigendecomposition, an SVD, a matrix root) runs on blocks of at most
``block_size`` along every axis, and so holds a block-diagonal approximation of the factors it
would hold for the whole matrix. Blocks are leaves to the inner transformation: with its
``stack_by_shape`` on, blocks of one shape, from one leaf or from many, share one stack.

It lives with the wrappers (not the transformations) because it changes no number itself: it
changes the tree an inner transformation sees, as :func:`gradxform.masked` does.
"""

from __future__ import annotations

import itertools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _checks, _validate
from gradxform._base import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    as_transformation,
    expect_state,
    extra_args_filter,
)


class BlockedMatricesState(NamedTuple):
    """``inner_state``: the inner transformation's state, over the blocked tree (a blocked
    leaf's place holds a tuple, one entry per block).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt = gx.blocked_matrices(gx.scale_by_adam(), block_size=2)
      >>> state = opt.init({"w": jnp.ones((3, 2)), "b": jnp.ones(3)})
      >>> [m.shape for m in state.inner_state.mu["w"]], state.inner_state.mu["b"].shape
      ([(2, 2), (1, 2)], (3,))
    """

    inner_state: Any


def _pieces(d: int, block_size: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of the pieces of an axis of length ``d``: ``block_size`` long, the
    last the remainder."""
    return [(s, min(s + block_size, d)) for s in range(0, d, block_size)]


def _is_blocked(shape: tuple[int, ...], block_size: int) -> bool:
    # An empty leaf has no block to cut: it reaches the inner transformation as it is.
    return len(shape) >= 2 and max(shape) > block_size and 0 not in shape


def _split(x: Any, block_size: int) -> Any:
    """``x`` as the tuple of its blocks in row-major order of the block grid, or ``x``
    itself when it is not blocked."""
    shape = jnp.shape(x)
    if not _is_blocked(shape, block_size):
        return x
    grid = itertools.product(*(_pieces(d, block_size) for d in shape))
    return tuple(x[tuple(slice(a, b) for a, b in corner)] for corner in grid)


def _join(blocks: Any, shape: tuple[int, ...], block_size: int) -> Any:
    """The inverse of :func:`_split` for a leaf of ``shape``."""
    if not _is_blocked(shape, block_size):
        return blocks
    counts = [len(_pieces(d, block_size)) for d in shape]
    parts = list(blocks)
    # Concatenate along the last axis first: each pass turns groups of consecutive blocks of
    # the row-major grid into one block of the grid with one axis fewer.
    for axis in reversed(range(len(shape))):
        n = counts[axis]
        parts = [jnp.concatenate(parts[i : i + n], axis=axis) for i in range(0, len(parts), n)]
    (whole,) = parts
    return whole


def split_into_blocks(tree: Any, block_size: int) -> Any:
    """``tree`` with every leaf of ``ndim >= 2`` that has an axis longer than ``block_size``
    replaced by the tuple of its blocks (see :func:`blocked_matrices`)."""
    return jax.tree.map(lambda x: _split(x, block_size), tree)


def join_blocks(blocked: Any, like: Any, block_size: int) -> Any:
    """The tree of ``like``'s structure and shapes whose leaves are the concatenated blocks
    of ``blocked`` (the inverse of :func:`split_into_blocks`)."""
    treedef = jax.tree.structure(like)
    leaves = [
        _join(b, jnp.shape(x), block_size)
        for b, x in zip(treedef.flatten_up_to(blocked), jax.tree.leaves(like), strict=True)
    ]
    return treedef.unflatten(leaves)


def blocked_matrices(inner: GradientTransformation, *, block_size: int) -> GradientTransformation:
    """Runs ``inner`` on blocks of at most ``block_size`` along every axis of large tensors.

    Every leaf of ``ndim >= 2`` with an axis longer than ``block_size`` is cut along each axis
    into pieces of ``block_size`` (the last piece the remainder; an axis of at most
    ``block_size`` stays whole), and ``inner`` sees the tuple of the blocks in its place. Its
    updates are concatenated back into the leaf's shape. For a matrix ``G`` cut into blocks
    ``G_ij``::

        u = [[inner(G)_11, ..., inner(G)_1n], ..., [inner(G)_m1, ..., inner(G)_mn]]

    where ``inner(G)_ij`` is what ``inner`` computes for the block ``G_ij`` (with the params
    blocked alike): a Kronecker preconditioner becomes block-diagonal, each block with factors
    of at most ``block_size`` square. Every axis of a tensor of ``ndim > 2`` is cut, leading
    axes included: no axis is taken as a batch axis, so each block has the leaf's ``ndim`` and
    an inner that puts a factor on every axis (Shampoo, SOAP) holds none longer than
    ``block_size``. Vectors and scalars, empty leaves, and leaves with no axis longer than
    ``block_size`` reach ``inner`` untouched. Extra keyword arguments are passed to ``inner``
    as they are (not blocked). An element-wise ``inner`` computes the same numbers blocked or
    not; an inner that reduces over a leaf (a norm, an rms) reduces over each block instead.

    Args:
      inner: the transformation to run on the blocked tree.
      block_size: the longest an axis of a block may be (a positive int).

    Returns:
      A transformation whose state is :class:`BlockedMatricesState`.

    Example:
      >>> import jax, jax.numpy as jnp, gradxform as gx
      >>> opt = gx.blocked_matrices(gx.scale_by_shampoo(), block_size=2)
      >>> params = {"w": jnp.ones((3, 2)), "b": jnp.ones(3)}
      >>> state = opt.init(params)  # "w": rows 2 + 1, so blocks (2, 2) and (1, 2)
      >>> [[f.shape for f in block] for block in state.inner_state.statistics["w"]]
      [[(2, 2), (2, 2)], [(1, 1), (2, 2)]]
      >>> updates, state = jax.jit(opt.update)(params, state, params)
      >>> updates["w"].shape
      (3, 2)

    References:
      Anil et al., `Scalable Second Order Optimization for Deep Learning
      <https://arxiv.org/abs/2002.09018>`_, 2020; Shi et al., `A Distributed Data-Parallel
      PyTorch Implementation of the Distributed Shampoo Optimizer for Training Neural Networks
      At-Scale <https://arxiv.org/abs/2309.06497>`_, 2023.
    """
    who = "blocked_matrices"
    inner = as_transformation(inner, f"{who}: `inner`")
    _validate.count(who, "block_size", block_size)
    return blocks_of(who, inner, block_size)


def blocks_of(who: str, inner: GradientTransformation, block_size: int) -> GradientTransformation:
    """:func:`blocked_matrices` with errors naming ``who`` (the optimizer users call)."""
    keep_extra = extra_args_filter(inner.update)

    def init_fn(params):
        return BlockedMatricesState(inner.init(split_into_blocks(params, block_size)))

    def update_fn(updates, state, params=None, **extra_args):
        expect_state(who, state, BlockedMatricesState)
        # Checked whole, before blocking, so that an error names the leaf and its shape.
        _checks.check_against_params(who, updates, params)
        blocked_params = None if params is None else split_into_blocks(params, block_size)
        new, inner_state = inner.update(
            split_into_blocks(updates, block_size),
            state.inner_state,
            blocked_params,
            **keep_extra(extra_args),
        )
        return join_blocks(new, updates, block_size), BlockedMatricesState(inner_state)

    return GradientTransformationExtraArgs(init_fn, update_fn)
