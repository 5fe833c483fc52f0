"""Flat parameters: a model's parameter tree kept as a few contiguous buffers.

An optimizer step is memory-bound, and with a tree of many leaves its cost is dominated by
per-leaf work: every leaf of params, gradients and each moment is a separate argument of the
jitted step, a separate kernel, and separate compile work (XLA compiles each fused kernel on
its own). Keeping the parameters as one buffer per dtype (and per group) makes the step cost
O(groups) instead of O(leaves), with exactly the same per-element arithmetic.

The model still sees its tree: :meth:`FlatLayout.unflatten` views the buffers as the original
tree with slices and reshapes, which XLA fuses into their consumers inside the jitted loss.
Gradients taken with respect to the flat buffers come out flat, so every transformation runs on
a dict of a few long vectors::

    flat, layout = gx.flatten_params(params)
    opt = gx.adam(1e-3)
    state = opt.init(flat)

    @jax.jit
    def step(flat, state, batch):
        grads = jax.grad(lambda f: loss(layout.unflatten(f), batch))(flat)
        updates, state = opt.update(grads, state, flat)
        return gx.apply_updates(flat, updates), state

Element-wise transformations give the same numbers on the flat buffers as on the tree (the
tests check this bit for bit). Transformations that look at a leaf's shape (``adaptive_grad_clip``
and ``clip_by_block_rms``, whose units are rows or leaves) and masks given per leaf need the
tree: masks are translated with :meth:`FlatLayout.mask` after grouping the leaves by the mask.

Models of Flax NNX and Equinox are pytrees, and their parameters flatten as they are: an
``nnx.State`` (``nnx.split(model, nnx.Param, ...)`` or ``nnx.state(model, nnx.Param)``) and an
Equinox module's array leaves (``eqx.filter(model, eqx.is_array)``, or the first half of
``eqx.partition``) come back from :meth:`FlatLayout.unflatten` as the same ``State`` or module,
bitwise, ready for ``nnx.merge`` or ``eqx.combine``. Neither library is imported here: the
checks that name them look them up in ``sys.modules``, where they are only if the caller
already imported them.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Hashable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradxform import _checks, _tree
from gradxform._base import GradientTransformation, as_transformation, extra_args_filter
from gradxform._masks import broadcast_prefix, is_mask_function

Groups = Any  # a tree of hashable labels (e.g. bools) matching the params, or a function of them


class _Slot(NamedTuple):
    key: str
    offset: int
    shape: tuple[int, ...]


def _label_leaves(groups: Groups, params: Any, treedef) -> list[Hashable]:
    if groups is None:
        return [None] * treedef.num_leaves
    labels = groups(params) if is_mask_function(groups) else groups
    return broadcast_prefix(labels, params, "flatten_params", "groups")[0]


def _check_arrays_only(params: Any) -> None:
    """Raises ``TypeError`` for a whole model or a leaf that is not an array, saying what to pass.

    A Flax NNX module is a pytree whose leaves include batch statistics, RNG keys and counters,
    which are not parameters; an Equinox module's leaves include its activation functions.
    """
    nnx = sys.modules.get("flax.nnx")
    if nnx is not None and isinstance(params, nnx.Module):
        raise TypeError(
            f"flatten_params: got the Flax NNX module {type(params).__name__} itself; pass its "
            "parameters, `nnx.state(model, nnx.Param)` (or the `nnx.Param` part of `nnx.split`), "
            "and rebuild the model with `nnx.merge(graphdef, layout.unflatten(flat), ...)`"
        )
    eqx = sys.modules.get("equinox")
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if isinstance(leaf, (jax.Array, np.ndarray, np.generic, int, float, complex)) or hasattr(
            leaf, "__jax_array__"
        ):
            continue
        hint = "pass only the arrays to optimize"
        if eqx is not None:
            hint = (
                "for an Equinox module pass `eqx.filter(model, eqx.is_array)` (or the first half "
                "of `eqx.partition(model, eqx.is_array)`) and rebuild it with `eqx.combine`"
            )
        raise TypeError(
            f"flatten_params: the leaf at {_tree.path_name(path)} is a {type(leaf).__name__}, "
            f"not an array; {hint}"
        )


def _buffer_key(dtype: np.dtype, label: Hashable) -> str:
    return str(dtype) if label is None else f"{label}/{dtype}"


class FlatLayout:
    """Where each leaf of a parameter tree lives in the flat buffers.

    Built by :func:`flatten_params`; static (plain Python), so it can be closed over by jitted
    functions. Buffers are keyed ``"<dtype>"``, or ``"<label>/<dtype>"`` when leaves are grouped.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> flat, layout = gx.flatten_params({"b": jnp.zeros(3), "w": jnp.ones((2, 3))})
      >>> layout.sizes  # elements per buffer
      {'float32': 9}
      >>> layout.unflatten({"float32": jnp.arange(9.0)})["w"]  # w's slot: elements 3 to 8
      Array([[3., 4., 5.],
             [6., 7., 8.]], dtype=float32)
    """

    def __init__(self, treedef, slots: list[_Slot], sizes: dict[str, int], labels: dict[str, Any]):
        self.treedef = treedef
        self.slots = tuple(slots)
        self.sizes = dict(sizes)
        self.labels = dict(labels)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}: {n}" for k, n in self.sizes.items())
        return f"FlatLayout({self.treedef.num_leaves} leaves -> {{{sizes}}})"

    def flatten(self, tree: Any) -> dict[str, jax.Array]:
        """Packs a tree with the params' structure (params, gradients, ...) into the buffers."""
        _tree.check_same_structure(
            self.treedef.unflatten([0] * len(self.slots)), tree, "layout's params", "tree"
        )
        leaves = self.treedef.flatten_up_to(tree)
        pieces: dict[str, list[jax.Array]] = {key: [] for key in self.sizes}
        for slot, leaf in zip(self.slots, leaves, strict=True):
            if tuple(jnp.shape(leaf)) != slot.shape:
                raise ValueError(
                    f"FlatLayout.flatten: leaf shape {jnp.shape(leaf)} differs from the "
                    f"layout's {slot.shape}"
                )
            pieces[slot.key].append(jnp.ravel(leaf))
        return {
            key: (jnp.concatenate(parts) if len(parts) > 1 else parts[0])
            for key, parts in pieces.items()
        }

    def unflatten(self, flat: dict[str, jax.Array]) -> Any:
        """Views the buffers as the original tree (slices and reshapes, fused by XLA)."""
        if set(flat) != set(self.sizes):
            raise ValueError(
                f"FlatLayout.unflatten: expected buffers {sorted(self.sizes)}, got {sorted(flat)}"
            )
        pieces = {}
        for key, size in self.sizes.items():
            buffer = flat[key]
            if buffer.shape[-1:] != (size,):
                raise ValueError(
                    f"FlatLayout.unflatten: buffer {key!r} has shape {buffer.shape}, the layout "
                    f"needs a last axis of {size}"
                )
            slots = [slot for slot in self.slots if slot.key == key]
            # One split per buffer: a single operation, rather than a slice (and a separately
            # compiled kernel) per leaf.
            sizes = [math.prod(slot.shape) for slot in slots]
            parts = (
                jax.lax.split(buffer, sizes, axis=buffer.ndim - 1) if len(sizes) > 1 else [buffer]
            )
            for slot, part in zip(slots, parts, strict=True):
                pieces[slot] = part.reshape(buffer.shape[:-1] + slot.shape)
        return self.treedef.unflatten([pieces[slot] for slot in self.slots])

    def mask(self, mask: Any | Callable[[Any], Any]) -> dict[str, bool]:
        """A per-leaf boolean mask (or mask function) as a per-buffer mask.

        Every buffer must be uniform under the mask: group the leaves by it when flattening,
        ``flatten_params(params, groups=mask)``.
        """
        like = self.treedef.unflatten(
            [jax.ShapeDtypeStruct(slot.shape, jnp.float32) for slot in self.slots]
        )
        values = mask(like) if is_mask_function(mask) else mask
        full = jax.tree.map(lambda m, sub: jax.tree.map(lambda _: m, sub), values, like)
        flags = self.treedef.flatten_up_to(full)
        per_buffer: dict[str, set] = {key: set() for key in self.sizes}
        for slot, flag in zip(self.slots, flags, strict=True):
            per_buffer[slot.key].add(bool(flag))
        mixed = [key for key, seen in per_buffer.items() if len(seen) > 1]
        if mixed:
            raise ValueError(
                f"FlatLayout.mask: buffers {mixed} mix masked and unmasked leaves; flatten with "
                "`flatten_params(params, groups=mask)` so that each buffer is uniform"
            )
        return {key: seen.pop() for key, seen in per_buffer.items() if seen}


def flatten_params(
    params: Any, *, groups: Groups = None
) -> tuple[dict[str, jax.Array], FlatLayout]:
    """Packs a parameter tree into one contiguous buffer per dtype (and per group).

    ::

        flat[key] = concatenate([ravel(p) for p in leaves if key(p) == key])

    A Flax NNX ``State`` and an Equinox module filtered to its arrays are parameter trees
    like any other, and :meth:`FlatLayout.unflatten` gives them back as a ``State`` or module::

        graphdef, params, rest = nnx.split(model, nnx.Param, ...)   # Flax NNX
        params, static = eqx.partition(model, eqx.is_array)         # Equinox
        flat, layout = gx.flatten_params(params)
        # in the loss: nnx.merge(graphdef, layout.unflatten(flat), rest)
        #          or: eqx.combine(layout.unflatten(flat), static)

    Args:
      params: the parameter tree (floating-point leaves): a tree of arrays, an ``nnx.State``
        or an Equinox module's array leaves. Not a whole NNX module (its batch statistics and
        RNG state are not parameters) nor a module with non-array leaves (functions): those
        raise ``TypeError`` naming what to pass instead.
      groups: optional labels that split the buffers further: a tree of hashable labels
        matching ``params`` (or a prefix), or a function of params returning one, e.g.
        :func:`gradxform.decay_matrices_only` so that decayed and non-decayed leaves land in
        different buffers and a weight-decay mask can be given per buffer.

    Returns:
      ``(flat, layout)``: the buffers, a dict keyed by ``"<dtype>"`` or ``"<label>/<dtype>"``,
      and the :class:`FlatLayout` that views them as the tree again.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
      >>> flat, layout = gx.flatten_params(params)
      >>> {k: v.shape for k, v in flat.items()}
      {'float32': (9,)}
      >>> layout.unflatten(flat)["w"].shape
      (2, 3)
    """
    _check_arrays_only(params)
    _tree.check_inexact_leaves(params, "flatten_params")
    leaves, treedef = jax.tree.flatten(params)
    labels = _label_leaves(groups, params, treedef)
    slots: list[_Slot] = []
    sizes: dict[str, int] = {}
    key_labels: dict[str, Hashable] = {}
    for leaf, label in zip(leaves, labels, strict=True):
        key = _buffer_key(jnp.result_type(leaf), label)
        if key in key_labels and (
            key_labels[key] != label or type(key_labels[key]) is not type(label)
        ):
            raise ValueError(
                f"flatten_params: group labels {key_labels[key]!r} and {label!r} both name the "
                f"buffer {key!r}; use labels whose strings differ"
            )
        offset = sizes.get(key, 0)
        slots.append(_Slot(key, offset, tuple(jnp.shape(leaf))))
        sizes[key] = offset + math.prod(jnp.shape(leaf))
        key_labels[key] = label
    layout = FlatLayout(treedef, slots, sizes, key_labels)
    return layout.flatten(params), layout


def flatten(inner: GradientTransformation) -> GradientTransformation:
    """Runs ``inner`` on one vector, the concatenation of every leaf (Optax's ``flatten``).

    ::

        v = concat(ravel(u_1), ..., ravel(u_n));   v <- inner(v);   u_i <- reshape(v_i)

    One leaf instead of many makes each of ``inner``'s tree maps one kernel (see
    :func:`flatten_params` for keeping the params flat across steps instead). The leaves are
    concatenated in the dtype they promote to.

    Args:
      inner: the transformation to run on the flat vector.

    Returns:
      A transformation whose state is ``inner``'s state for the flat vector.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.flatten(gx.scale_by_adam())
      >>> params = {"b": jnp.zeros(2), "w": jnp.zeros((2, 2))}
      >>> state = tx.init(params)
      >>> state.mu.shape  # Adam's state is one vector of 2 + 4
      (6,)
      >>> tx.update({"b": jnp.array([0.5, -2.0]), "w": jnp.ones((2, 2))}, state)[0]["b"]
      Array([ 1., -1.], dtype=float32)
    """
    inner = as_transformation(inner, "flatten: `inner`")
    keep_extra = extra_args_filter(inner.update)

    def ravel(tree):
        leaves = jax.tree.leaves(tree)
        return jnp.concatenate([jnp.reshape(x, [-1]) for x in leaves])

    def unravel(like, flat):
        leaves, treedef = jax.tree.flatten(like)
        offsets = np.cumsum([np.size(x) for x in leaves])[:-1]
        parts = jnp.split(flat, offsets)
        pieces = zip(parts, leaves, strict=True)
        return treedef.unflatten(
            [p.reshape(jnp.shape(x)).astype(jnp.result_type(x)) for p, x in pieces]
        )

    def init_fn(params):
        return inner.init(ravel(params))

    def update_fn(updates, state, params=None, **extra_args):
        if params is not None:
            _checks.check_updates("flatten", updates, params, "param")
        flat_params = None if params is None else ravel(params)
        flat, state = inner.update(ravel(updates), state, flat_params, **keep_extra(extra_args))
        return unravel(updates, flat), state

    return GradientTransformation(init_fn, update_fn)
