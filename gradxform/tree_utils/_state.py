"""State surgery: finding and replacing values by name inside (chained, wrapped) optimizer
states, and mapping a function over the copies of the params that a state holds.

Paths name a ``NamedTuple``'s field with :class:`NamedTupleKey` (the tuple's class and the
field), so that ``count`` of an ``InjectStatefulHyperparamsState`` and ``count`` of the
``ScaleByAdamState`` inside it can be told apart; dict keys, sequence indices and other nodes
keep JAX's key entries. The semantics are Optax's (``optax.tree_utils``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import jax

__all__ = [
    "NamedTupleKey",
    "tree_get",
    "tree_get_all_with_path",
    "tree_map_params",
    "tree_set",
]

KeyPath = tuple[Any, ...]
Filter = Callable[[KeyPath, Any], bool]


@dataclasses.dataclass(frozen=True)
class NamedTupleKey:
    """The key entry of a ``NamedTuple``'s field in a path: ``tuple_name.name``.

    Attributes:
      tuple_name: the class name of the ``NamedTuple`` (``"ScaleByAdamState"``).
      name: the field (``"mu"``).
    """

    tuple_name: str
    name: str

    def __str__(self) -> str:
        return f"{self.tuple_name}.{self.name}"


def _is_named_tuple(node: Any) -> bool:
    return isinstance(node, tuple) and hasattr(node, "_fields")


def _has_any(node: Any, keys: tuple[Any, ...]) -> bool:
    """Whether ``node`` is named by one of ``keys`` or holds one as a field or dict key."""
    if _is_named_tuple(node):
        return type(node).__name__ in keys or any(k in node._fields for k in keys)
    return isinstance(node, dict) and any(k in node for k in keys)


def _children(path: KeyPath, node: Any) -> list[tuple[KeyPath, Any]]:
    if _is_named_tuple(node):
        name = type(node).__name__
        return [((*path, NamedTupleKey(name, f)), getattr(node, f)) for f in node._fields]
    if isinstance(node, dict):
        return [((*path, jax.tree_util.DictKey(k)), v) for k, v in node.items()]
    raise ValueError(f"expected a NamedTuple or a dict, got a {type(node).__name__}")


def _nodes_with_path(tree: Any, stop: Callable[[Any], bool]) -> list[tuple[KeyPath, Any]]:
    """The leaves of ``tree`` with their paths, where a node for which ``stop`` holds counts
    as a leaf and a ``NamedTuple``'s fields are reached through :class:`NamedTupleKey`."""
    found = []
    top = jax.tree_util.tree_leaves_with_path(tree, is_leaf=lambda x: stop(x) or _is_named_tuple(x))
    for path, node in top:
        if stop(node) or not _is_named_tuple(node):
            found.append((path, node))
            continue
        for child_path, child in _children(path, node):
            found += [((*child_path, *p), x) for p, x in _nodes_with_path(child, stop)]
    return found


def _lookup(path: KeyPath, node: Any, key: Any) -> tuple[KeyPath, Any]:
    if _is_named_tuple(node):
        name = type(node).__name__
        if key == name:
            return path, node
        return (*path, NamedTupleKey(name, key)), getattr(node, key)
    return (*path, jax.tree_util.DictKey(key)), node[key]


def _all_with_path(tree: Any, key: Any) -> list[tuple[KeyPath, Any]]:
    # The outermost nodes holding `key` first, then what each of their children holds.
    holders = [
        (path, node)
        for path, node in _nodes_with_path(tree, lambda x: _has_any(x, (key,)))
        if _has_any(node, (key,))
    ]
    found = [_lookup(path, node, key) for path, node in holders]
    for path, node in holders:
        for child_path, child in _children(path, node):
            found += [((*child_path, *p), x) for p, x in _all_with_path(child, key)]
    return found


def tree_get_all_with_path(
    tree: Any, key: Any, filtering: Filter | None = None
) -> list[tuple[KeyPath, Any]]:
    """Every value of ``tree`` found under ``key``, with its path.

    ``key`` is a dict key, a ``NamedTuple`` field, or a ``NamedTuple``'s class name (which
    gives the whole tuple). Values inside a found value are found too.

    Args:
      tree: the tree (an optimizer state, say).
      key: the key, field or class name.
      filtering: ``filtering(path, value) -> bool``: keep only the values it accepts.

    Returns:
      ``[(path, value), ...]``; ``jax.tree_util.keystr(path)`` prints a path.

    Example:
      >>> import jax, jax.numpy as jnp, gradxform as gx
      >>> state = gx.chain(gx.clip(1.0), gx.adam(1e-3)).init(jnp.zeros(2))
      >>> [jax.tree_util.keystr(p) for p, _ in gx.tree_utils.tree_get_all_with_path(state, "mu")]
      ['[1][0]ScaleByAdamState.mu']
    """
    found = _all_with_path(tree, key)
    if filtering is not None:
        found = [(path, value) for path, value in found if filtering(path, value)]
    return found


def tree_get(tree: Any, key: Any, default: Any = None, filtering: Filter | None = None) -> Any:
    """The one value of ``tree`` under ``key`` (see :func:`tree_get_all_with_path`).

    Args:
      tree: the tree.
      key: the key, field or class name.
      default: what to return when nothing is found.
      filtering: ``filtering(path, value) -> bool``, to choose among several values.

    Returns:
      The value, or ``default``.

    Raises:
      KeyError: more than one value is found.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> state = gx.chain(gx.clip(1.0), gx.adam(1e-3)).init(jnp.zeros(2))
      >>> int(gx.tree_utils.tree_get(state, "count"))
      0
    """
    found = tree_get_all_with_path(tree, key, filtering)
    if len(found) > 1:
        raise KeyError(
            f"tree_get: found {len(found)} values for {key!r}, at "
            f"{[jax.tree_util.keystr(p) for p, _ in found]}; pass `filtering` to choose one"
        )
    return found[0][1] if found else default


def tree_set(tree: Any, filtering: Filter | None = None, /, **kwargs: Any) -> Any:
    """A copy of ``tree`` with the values under the given keys replaced.

    Each keyword names a dict key, a ``NamedTuple`` field or a ``NamedTuple``'s class name;
    its value replaces what is found there (accepted by ``filtering(path, value)``, if given).
    As in Optax, the search stops at the outermost nodes holding a key and descends from them
    only through dicts holding one: a field of a ``NamedTuple`` nested in a plain tuple under
    such a node is not reached.

    Args:
      tree: the tree.
      filtering: ``filtering(path, value) -> bool``, which of the found values to replace.
      **kwargs: ``key=new_value``.

    Returns:
      The new tree, of the same structure.

    Raises:
      KeyError: a key is found nowhere (or nowhere that ``filtering`` accepts).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt = gx.inject_hyperparams(gx.sgd)(learning_rate=0.1)
      >>> state = gx.tree_utils.tree_set(opt.init(jnp.zeros(2)), learning_rate=jnp.asarray(0.5))
      >>> float(state.hyperparams["learning_rate"])
      0.5
    """
    for key in kwargs:
        if not tree_get_all_with_path(tree, key, filtering):
            accepted = " that `filtering` accepts" if filtering is not None else ""
            raise KeyError(f"tree_set: found no value{accepted} under {key!r} in {tree}")
    keys = tuple(kwargs)

    def accepts(path: KeyPath, value: Any) -> bool:
        return filtering is None or filtering(path, value)

    def replace(path: KeyPath, node: Any) -> Any:
        if not _has_any(node, keys):
            return node
        if _is_named_tuple(node) and type(node).__name__ in kwargs and accepts(path, node):
            return kwargs[type(node).__name__]
        new = {}
        for child_path, child in _children(path, node):
            key = _plain_key(child_path[-1])
            if key in kwargs and accepts(child_path, child):
                new[key] = kwargs[key]
            elif isinstance(child, dict | list | tuple):
                new[key] = replace(child_path, child)
            else:
                new[key] = child
        return node._replace(**new) if _is_named_tuple(node) else new

    stop = lambda x: _has_any(x, keys)  # noqa: E731
    treedef = jax.tree.structure(tree, is_leaf=stop)
    return treedef.unflatten([replace(p, x) for p, x in _nodes_with_path(tree, stop)])


def _plain_key(entry: Any) -> Any:
    if isinstance(entry, jax.tree_util.DictKey):
        if isinstance(entry.key, str | int):
            return entry.key
        raise KeyError(f"tree_set: only str and int dict keys can be set, got {entry.key!r}")
    if isinstance(entry, NamedTupleKey):
        return entry.name
    raise KeyError(f"tree_set: cannot set a value under the key entry {entry!r}")


@jax.tree_util.register_pytree_node_class
class _ParamsStandIn:
    """An empty node given to ``init`` in place of the params: where it lands in the state,
    the state holds a copy of the params."""

    def tree_flatten(self):
        return (), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        del aux, children
        return cls()


@runtime_checkable
class Initable(Protocol):
    """Anything with ``init(params) -> state`` (a transformation)."""

    def init(self, params: Any) -> Any:
        """The state for ``params``."""


def tree_map_params(
    initable: Callable[[Any], Any] | Initable,
    f: Callable[..., Any],
    state: Any,
    /,
    *rest: Any,
    transform_non_params: Callable[..., Any] | None = None,
    is_leaf: Callable[[Any], bool] | None = None,
) -> Any:
    """Maps ``f`` over every copy of the params inside an optimizer state.

    ``init`` is run on an empty stand-in for the params; wherever the stand-in lands in the
    state (the moments of Adam, the selected leaves of a masked transformation, ...), the
    matching subtree of ``state`` holds params-shaped leaves, and ``f(leaf, *rest_leaves)`` is
    mapped over it. Use it to build a state's shardings from the params' shardings.

    Args:
      initable: a transformation, or its ``init`` function.
      f: the function of a param-shaped leaf (and the matching leaves of ``rest``).
      state: the state.
      *rest: trees of the params' structure passed to ``f`` beside each leaf.
      transform_non_params: applied to every other leaf of the state (counters, flags, ...);
        by default they are kept.
      is_leaf: passed to ``jax.tree.map`` over the params' copies (for example to treat a
        masked-out ``gradxform.MaskedNode`` as a leaf).

    Returns:
      The mapped state.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt = gx.adam(0.1)
      >>> params = {"w": jnp.zeros(3)}
      >>> shapes = gx.tree_utils.tree_map_params(
      ...     opt, lambda p: p.shape, opt.init(params), transform_non_params=lambda _: None
      ... )
      >>> gx.tree_utils.tree_get(shapes, "mu")
      {'w': (3,)}
    """
    stand_in = _ParamsStandIn()
    init = initable.init if isinstance(initable, Initable) else initable
    template = init(stand_in)

    def map_part(marker: Any, part: Any) -> Any:
        if isinstance(marker, _ParamsStandIn):
            return jax.tree.map(f, part, *rest, is_leaf=is_leaf)
        return part if transform_non_params is None else transform_non_params(part)

    return jax.tree.map(map_part, template, state, is_leaf=lambda x: isinstance(x, _ParamsStandIn))
