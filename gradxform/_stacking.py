"""Per-leaf state of the matrix optimizers, kept leaf by leaf or in one stack per shape.

A matrix optimizer (SOAP, Shampoo, GaLore, Muon) runs the same expensive computation on every
matrix of the model: an eigendecomposition, an SVD, a matrix root, a Newton-Schulz iteration.
Leaf by leaf (their default), the compiled program holds one copy of it per matrix, and its
size and compile time grow with the depth of the model. With ``stack_by_shape=True`` the
optimizer keeps its per-leaf state as one stack per group of leaves of the same shape and dtype
(:class:`LeafLayout`) and computes each group under one ``jax.vmap``: the program holds one
computation per distinct shape, and what grows with depth is only the per-leaf part any
optimizer has (stacking the gradients, reading each leaf's update out of its stack, applying
it). Measured (``python -m benchmarks.matrix_compile``, 2-core EPYC CPU, 48-layer
transformer-shaped tree): SOAP's step compiles in 3.5 s stacked against 22.3 s leaf by leaf.

Each leaf is read out of its stack at a runtime position (:func:`runtime_positions`): with a
constant position every read is a distinct kernel, compiled on its own (about 25 ms each on a
2-core CPU). Stacking stays opt-in: the state is then a tuple of stacks, not a tree of the
params' structure (Optax's ``tree_map_params`` does not see it), and on a CPU the steps are
no faster (``docs/frontier_optimizers.md`` has the table).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from gradxform import _checks


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

    Stacked and leaf by leaf compute the same numbers up to the order in which a batched
    product sums (tested per optimizer in float64, within 1e-13 of 1 + |value|; in float32 a
    few ulps apart). A group of one leaf is vmapped too, so a leaf's numbers do not depend on
    how many others share its shape.
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
        if not self.stacked:
            return [fn(*args) for args in zip(*units, strict=True)]
        # A unit with no arrays (a scalar's empty tuple of factors) has nothing to map over.
        return [
            jax.vmap(fn)(*args) if jax.tree.leaves(args) else fn(*args)
            for args in zip(*units, strict=True)
        ]

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
