"""Same-shape leaves stacked and mapped with one ``vmap``, or mapped leaf by leaf.

A matrix optimizer (SOAP, Shampoo, GaLore, Muon) runs the same expensive computation on every
matrix of the model: an eigendecomposition, an SVD, a matrix root, a Newton-Schulz iteration.
:func:`stacked_map` is ``jax.tree.map`` for such a computation. Stacked, it groups the leaves
whose arguments have the same shapes and dtypes, stacks each group on a new leading axis and
runs ``fn`` once per group under ``jax.vmap``, so the traced program holds one batched
computation per distinct shape, whatever the depth of the model.

Leaf by leaf is the default, because it is what measures faster on XLA's CPU backend
(``benchmarks/matrix_compile.py``; 2-core EPYC). XLA compiles a fused kernel once per distinct
computation: the per-leaf kernels of same-shape leaves are compiled once (48 leaves ``x * 2``
of one shape compile in 0.07 s, of 48 shapes in 2.0 s). Stacked, each leaf is read out of its
group's result at a runtime position (:func:`runtime_positions`): with a constant position the
slices are distinct kernels, one per leaf (about 25 ms of compile each), which made the stacked
program slower to compile than leaf by leaf (Shampoo on 48 layers: 71 s against 11 s). With
runtime positions the stacked program's distinct kernels do not grow with depth; what still
grows is the number of instructions (the stacking, the reads, the per-leaf state), and with it
the compile time (not profiled pass by pass), more slowly than leaf by leaf's (SOAP on 48
layers: 15.7 s of CPU stacked, 24.3 s leaf by leaf). Stacking stays opt-in, within
:func:`stacked_by_shape`: on this CPU it compiles no faster up to 12 layers and its steps are
slower at every depth measured (SOAP on 48 layers: 6.9 s against 5.5 s); on a backend where
launching one kernel per leaf dominates it may win (unmeasured: no accelerator was used).

Every stacked group is mapped with ``vmap``, a group of one leaf included, so that a leaf's
numbers do not depend on how many other leaves share its shape.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable, Iterator
from typing import Any

import jax
import jax.numpy as jnp

from gradxform import _checks

_stack_by_default = [False]


@contextlib.contextmanager
def _stacking(stack: bool) -> Iterator[None]:
    _stack_by_default.append(stack)
    try:
        yield
    finally:
        _stack_by_default.pop()


def stacked_by_shape() -> contextlib.AbstractContextManager[None]:
    """Within this context, :func:`stacked_map` stacks same-shape leaves under one ``vmap``.

    It acts while tracing: a function already traced (``jax.jit``'s cache is keyed on the
    function and the arguments' types, not on this context) keeps the program it had, so trace
    a new function (or call ``jax.jit(...).trace``) within it.
    """
    return _stacking(True)


def leaf_by_leaf() -> contextlib.AbstractContextManager[None]:
    """Within this context, :func:`stacked_map` computes leaf by leaf (the default)."""
    return _stacking(False)


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
    """``jax.tree.map(fn, tree, *rest)``, or one ``vmap``-ped call of ``fn`` per shape group.

    The leaves of ``tree`` (as ``is_leaf`` decides) give the calls; each of ``rest`` must have
    ``tree``'s structure as a prefix, and its matching subtree is passed along (a leaf's state,
    say). Calls whose arguments have the same tree structure, shapes and dtypes are stacked on a
    new leading axis and computed by one ``jax.vmap(fn)``; the results are split back in the
    order of the leaves. ``fn`` must treat its arguments as one leaf's (no reduction across
    leaves). Without ``stack`` the enclosing context decides: leaf by leaf unless traced within
    :func:`stacked_by_shape`.

    Args:
        fn: the computation for one leaf; returns any tree of arrays.
        tree: the tree whose leaves define the calls.
        *rest: trees with ``tree``'s structure as a prefix.
        is_leaf: as for ``jax.tree.flatten``.
        stack: ``True`` to stack, ``False`` to compute leaf by leaf, ``None`` (default) as
            the enclosing :func:`stacked_by_shape` or :func:`leaf_by_leaf` says (leaf by leaf
            outside both).

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
    traced = any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(calls))
    # Eagerly nothing is compiled per kernel, and Python ints index faster.
    size = max(map(len, groups.values()), default=0)
    positions = runtime_positions(size) if traced else range(size)
    for indices in groups.values():
        stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *(calls[i] for i in indices))
        out = jax.vmap(fn)(*stacked)
        for position, index in zip(positions, indices, strict=False):
            results[index] = jax.tree.map(
                lambda x, p=position: jax.lax.dynamic_index_in_dim(x, p, keepdims=False), out
            )
    return treedef.unflatten(results)


def runtime_positions(n: int) -> tuple[jax.Array, ...]:
    """``0, 1, ..., n - 1`` as ``n`` int32 scalars that XLA cannot fold into constants.

    ``x[i]`` with a constant ``i`` compiles to a slice whose offset is part of the kernel: ``n``
    slices of one stack are ``n`` distinct kernels, compiled one by one (about 25 ms each on a
    2-core CPU). With ``i`` a runtime scalar, ``dynamic_index_in_dim(x, i)`` is the same kernel
    for every ``i`` and XLA compiles it once. A constant (even behind
    ``lax.optimization_barrier``) is folded back into the slice, and ``i`` computed from a
    runtime value by its own small kernel makes ``n`` distinct small kernels; the counter of a
    loop is neither: ``n - 1`` iterations of ``c_k <- c_{k-1} + 1`` leave ``c_k = k`` and hold
    one ``+ 1`` kernel, whatever ``n``. The loop costs ``n - 1`` iterations of ``n`` scalar
    additions per step.
    """
    if n <= 1:
        return tuple(jnp.zeros([], jnp.int32) for _ in range(n))

    def shift(_, counters):
        return (counters[0], *(c + 1 for c in counters[:-1]))

    return jax.lax.fori_loop(0, n - 1, shift, (jnp.zeros([], jnp.int32),) * n)


class LeafLayout:
    """Where a matrix optimizer keeps one leaf's state, and how it maps its per-leaf work.

    Built from a tree (the params in ``init``, the updates in ``update``) and the optimizer's
    ``stack_by_shape`` flag. Its *units* are what the per-leaf work is mapped over:

    - leaf by leaf (``stacked=False``): the leaves themselves; a state field is a tree of the
      params' structure (one entry per leaf), and ``fn`` runs once per leaf;
    - stacked (``stacked=True``): one unit per group of leaves with the same shape and dtype
      (groups in the order of their first leaf), each the group's leaves stacked on a new
      leading axis; a state field is a tuple with one stack per group, and ``fn`` runs once per
      group under ``jax.vmap``. The traced program then holds one computation per distinct
      shape, and its per-leaf part is only the stacking, the reads and the final updates.

    ``jax.vmap`` of a computation gives, on XLA's CPU backend, the numbers of the computation
    leaf by leaf bit for bit (tested per optimizer); a group of one leaf is vmapped too, so a
    leaf's numbers do not depend on how many others share its shape.
    """

    def __init__(self, tree: Any, *, stacked: bool) -> None:
        leaves, self.treedef = jax.tree.flatten(tree)
        self.stacked = stacked
        self.size = len(leaves)
        groups: dict[tuple, list[int]] = {}
        for index, leaf in enumerate(leaves):
            groups.setdefault((jnp.shape(leaf), jnp.result_type(leaf)), []).append(index)
        self.keys = tuple(groups)
        self.groups = tuple(tuple(members) for members in groups.values())

    def units(self, tree: Any) -> list:
        """``tree`` (the layout's structure, or with it as a prefix) as units."""
        leaves = self.treedef.flatten_up_to(tree)
        if not self.stacked:
            return leaves
        return [
            jax.tree.map(lambda *xs: jnp.stack(xs), *(leaves[i] for i in members))
            for members in self.groups
        ]

    def map(self, fn: Callable[..., Any], *units: list) -> list:
        """``fn`` on each unit's arguments (vmapped when stacked)."""
        apply = jax.vmap(fn) if self.stacked else fn
        return [apply(*args) for args in zip(*units, strict=True)]

    def tree(self, units: list) -> Any:
        """The tree of the layout's structure whose leaves are the units' entries."""
        if not self.stacked:
            return self.treedef.unflatten(units)
        results: list[Any] = [None] * self.size
        traced = any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(units))
        size = max(map(len, self.groups), default=0)
        # Eagerly nothing is compiled per kernel, and Python ints index faster.
        positions = runtime_positions(size) if traced else range(size)
        for members, unit in zip(self.groups, units, strict=True):
            for position, index in zip(positions, members, strict=False):
                results[index] = jax.tree.map(
                    lambda x, p=position: jax.lax.dynamic_index_in_dim(
                        x, p, keepdims=False, allow_negative_indices=False
                    ),
                    unit,
                )
        return self.treedef.unflatten(results)

    def state(self, units: list) -> Any:
        """Units as a state field: the tree of leaves, or the tuple of stacks."""
        return tuple(units) if self.stacked else self.treedef.unflatten(units)

    def state_units(self, field: Any) -> list:
        """A state field (as :meth:`state` made it) as units."""
        return list(field) if self.stacked else self.treedef.flatten_up_to(field)

    def checked_units(self, who: str, field: Any, name: str, updates: Any) -> list:
        """A state field of the leaves' shapes (a moment) as units, checked against the
        ``updates``: leaf by leaf by ``check_updates``; stacked, each stack against its group's
        number of leaves, shape and dtype. Errors name ``who`` and both sides."""
        if not self.stacked:
            _checks.check_updates(who, updates, field, name)
            return self.treedef.flatten_up_to(field)
        expected = [(len(m), *shape) for m, (shape, _) in zip(self.groups, self.keys, strict=True)]
        found = (
            [jnp.shape(x) for x in field]
            if isinstance(field, tuple) and all(hasattr(x, "shape") for x in field)
            else None
        )
        if found != [tuple(e) for e in expected]:
            raise ValueError(
                f"{who}: the state's {name} holds one stack per group of same-shape leaves "
                f"(stack_by_shape=True); the updates group into stacks of shapes {expected} "
                f"(group size first), the state has {found if found is not None else field!r}. "
                "Was the state made for another model, or with stack_by_shape=False?"
            )
        for (shape, dtype), stack in zip(self.keys, field, strict=True):
            one = jax.ShapeDtypeStruct(jnp.shape(stack)[1:], jnp.result_type(stack))
            _checks.check_leaf_update(who, (), jax.ShapeDtypeStruct(shape, dtype), one, name)
        return list(field)


def columns(results: list, n: int) -> list[list]:
    """Per-unit results that are ``n``-tuples, as ``n`` lists (``n`` empty lists for none)."""
    return [[r[i] for r in results] for i in range(n)]
