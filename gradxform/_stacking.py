"""One computation per distinct shape: leaves of the same shape stacked and mapped with ``vmap``.

A matrix optimizer (SOAP, Shampoo, GaLore, Muon) runs the same expensive computation on every
matrix of the model: an eigendecomposition, an SVD, a matrix root, a Newton-Schulz iteration.
Written leaf by leaf, a transformer with 48 layers traces and compiles that computation once per
matrix, so compile time grows with depth. :func:`stacked_map` groups the leaves whose arguments
have the same shapes and dtypes, stacks each group on a new leading axis, and runs ``fn`` once
per group under ``jax.vmap``: the program holds one batched computation per distinct shape, and
compile time depends on the number of distinct shapes, not the number of layers.

Every group is mapped with ``vmap``, a group of one leaf included, so that a leaf's numbers do
not depend on how many other leaves share its shape.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable, Iterator
from typing import Any

import jax
import jax.numpy as jnp

_stack_by_default = [True]


@contextlib.contextmanager
def leaf_by_leaf() -> Iterator[None]:
    """Within this context (while tracing), :func:`stacked_map` computes leaf by leaf.

    For benchmarks and tests that compare the stacked program with a per-leaf one of the same
    optimizer.
    """
    _stack_by_default.append(False)
    try:
        yield
    finally:
        _stack_by_default.pop()


def _signature(args: tuple) -> Hashable:
    """What decides whether two leaves' arguments can share one batched computation."""
    leaves, structure = jax.tree.flatten(args)
    return structure, tuple((jnp.shape(x), jnp.result_type(x)) for x in leaves)


def stacked_map(
    fn: Callable[..., Any],
    tree: Any,
    *rest: Any,
    is_leaf: Callable[[Any], bool] | None = None,
    stack: bool | None = None,
) -> Any:
    """``jax.tree.map(fn, tree, *rest)``, with one ``vmap``-ped call of ``fn`` per shape group.

    The leaves of ``tree`` (as ``is_leaf`` decides) give the calls; each of ``rest`` must have
    ``tree``'s structure as a prefix, and its matching subtree is passed along (a leaf's state,
    say). Calls whose arguments have the same tree structure, shapes and dtypes are stacked on a
    new leading axis and computed by one ``jax.vmap(fn)``; the results are split back in the
    order of the leaves. ``fn`` must treat its arguments as one leaf's (no reduction across
    leaves). ``stack=False`` (or tracing within :func:`leaf_by_leaf`) calls ``fn`` leaf by leaf
    instead, for comparisons and benchmarks.

    Args:
        fn: the computation for one leaf; returns any tree of arrays.
        tree: the tree whose leaves define the calls.
        *rest: trees with ``tree``'s structure as a prefix.
        is_leaf: as for ``jax.tree.flatten``.
        stack: ``False`` to compute leaf by leaf, without ``vmap``; ``None`` stacks unless
            traced within :func:`leaf_by_leaf`.

    Returns:
        A tree of ``tree``'s structure whose leaves are ``fn``'s results.
    """
    leaves, treedef = jax.tree.flatten(tree, is_leaf=is_leaf)
    calls = list(zip(leaves, *(treedef.flatten_up_to(r) for r in rest), strict=True))
    if stack is None:
        stack = _stack_by_default[-1]
    if not stack:
        return treedef.unflatten([fn(*args) for args in calls])
    groups: dict[Hashable, list[int]] = {}
    for index, args in enumerate(calls):
        groups.setdefault(_signature(args), []).append(index)
    results: list[Any] = [None] * len(calls)
    for indices in groups.values():
        stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *(calls[i] for i in indices))
        out = jax.vmap(fn)(*stacked)
        for position, index in enumerate(indices):
            results[index] = jax.tree.map(lambda x, p=position: x[p], out)
    return treedef.unflatten(results)
