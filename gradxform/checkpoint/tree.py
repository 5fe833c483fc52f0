"""A tree's structure as JSON: describing a tree, comparing two descriptions, and rebuilding a
description as plain Python containers.

A description is a dict per node: ``{"node": "leaf", "index": i}`` for the ``i``-th leaf in
``jax.tree.leaves`` order, ``{"node": "None"}`` for ``None``, and for any other node its type's
name, whether its children are named (``mapping``), each child's key as
``jax.tree_util.keystr`` writes it (``keys``), its name for a plain dict (``names``) and its
description (``children``). Type names are only compared and shown, never used to find a class.

Every walk here is iterative, so that a deep tree ends in a clear error rather than a
``RecursionError``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from gradxform.checkpoint.schema import MAX_DEPTH, display_path


def _type_name(cls: type) -> str:
    if cls in (dict, list, tuple):
        return cls.__name__
    return f"{cls.__module__}.{cls.__qualname__}"


def _json_key(key: Any) -> Any:
    """A dict key as JSON can hold it: strings and numbers as they are, others as ``repr``."""
    if key is None or isinstance(key, str | bool | int | float):
        return key
    return repr(key)


def _child_name(key: Any) -> Any:
    if isinstance(key, jax.tree_util.DictKey):
        return _json_key(key.key)
    if isinstance(key, jax.tree_util.GetAttrKey):
        return key.name
    if isinstance(key, jax.tree_util.SequenceKey):
        return key.idx
    if isinstance(key, jax.tree_util.FlattenedIndexKey):
        return key.key
    return repr(key)


def _is_mapping_node(node: Any, keys: list) -> bool:
    if isinstance(node, dict) or hasattr(type(node), "_fields"):
        return True
    return any(isinstance(k, jax.tree_util.DictKey | jax.tree_util.GetAttrKey) for k in keys)


def _one_level(node: Any) -> list[tuple[tuple, Any]]:
    """``(key path, child)`` pairs of ``node``'s children; ``[((), node)]`` for a leaf."""
    # Every child is a leaf to this call, so it flattens one level only.
    children, _ = jax.tree_util.tree_flatten_with_path(node, is_leaf=lambda x: x is not node)
    return children


def describe(tree: Any, who: str) -> tuple[dict, list[tuple[str, Any]]]:
    """The structure of ``tree`` as a JSON-able dict, and its ``(path, leaf)`` pairs.

    Leaves are numbered depth first in the order JAX flattens children, which is
    ``jax.tree.leaves`` order; a leaf's path is ``jax.tree_util.keystr`` of its key path.
    ``None`` is a node without children, as in JAX. ``who`` starts the ValueError raised for a
    tree nested deeper than :data:`MAX_DEPTH` levels.
    """
    leaves: list[tuple[str, Any]] = []
    root: list[Any] = [None]
    # (node, its path, its depth, the list its description goes into, the slot in that list)
    stack: list[tuple[Any, str, int, list, int]] = [(tree, "", 0, root, 0)]
    while stack:
        node, path, depth, parent, slot = stack.pop()
        if depth > MAX_DEPTH:
            raise ValueError(
                f"{who} is nested more than {MAX_DEPTH} levels deep (at {display_path(path)}); "
                "checkpoints hold trees up to that depth"
            )
        if node is None:
            parent[slot] = {"node": "None"}
            continue
        children = _one_level(node)
        if len(children) == 1 and children[0][0] == ():
            leaves.append((path, node))
            parent[slot] = {"node": "leaf", "index": len(leaves) - 1}
            continue
        keys = [key_path[0] for key_path, _ in children]
        key_strings = [jax.tree_util.keystr((k,)) for k in keys]
        child_descriptions: list[Any] = [None] * len(children)
        description = {
            "node": _type_name(type(node)),
            "mapping": _is_mapping_node(node, keys),
            "keys": key_strings,
            "names": [_child_name(k) for k in keys],
            "children": child_descriptions,
        }
        parent[slot] = description
        # Pushed in reverse, so children are visited, and leaves numbered, in order.
        for i in reversed(range(len(children))):
            child = children[i][1]
            stack.append((child, path + key_strings[i], depth + 1, child_descriptions, i))
    return root[0], leaves


def _display_node(description: dict) -> str:
    node = description["node"]
    if node == "leaf":
        return "a leaf"
    if node == "None":
        return "None"
    return node.rsplit(".", 1)[-1]


def structure_differences(expected: dict, found: dict) -> list[str]:
    """Where ``found`` (the file's structure) departs from ``expected`` (``like``'s), one line
    per difference, each starting with its path."""
    out: list[str] = []
    stack = [(expected, found, "")]
    while stack:
        expected, found, path = stack.pop()
        if expected["node"] != found["node"]:
            out.append(
                f"{display_path(path)}: expected {_display_node(expected)}, "
                f"found {_display_node(found)}"
            )
            continue
        if expected["node"] in ("leaf", "None"):
            continue
        found_children = dict(zip(found["keys"], found["children"], strict=True))
        expected_keys = set(expected["keys"])
        pairs = []
        for key, child in zip(expected["keys"], expected["children"], strict=True):
            if key in found_children:
                pairs.append((child, found_children[key], path + key))
            else:
                out.append(f"{path + key}: in `like` but missing from the checkpoint")
        out.extend(
            f"{path + key}: in the checkpoint but not in `like`"
            for key in found["keys"]
            if key not in expected_keys
        )
        if set(found_children) == expected_keys and found["keys"] != expected["keys"]:
            # Leaves are matched by position, so the children's order must agree too.
            out.append(
                f"{display_path(path)}: children in another order: expected "
                f"{expected['keys']}, found {found['keys']}"
            )
        stack.extend(reversed(pairs))
    return out


def plain(description: dict, leaf: Callable[[int], Any]) -> Any:
    """The tree of a (checked) description as plain containers: nodes with named children as
    dicts, others as lists, ``None`` as ``None``, and leaf ``i`` as ``leaf(i)``. Leaves are
    fetched in index order."""
    root: list[Any] = [None]
    stack: list[tuple[dict, Any, Any]] = [(description, root, 0)]
    while stack:
        node, parent, slot = stack.pop()
        kind = node["node"]
        if kind == "None":
            parent[slot] = None
        elif kind == "leaf":
            parent[slot] = leaf(node["index"])
        else:
            children = node["children"]
            if node["mapping"]:
                container: Any = dict.fromkeys(node["names"])
                slots = node["names"]
            else:
                container = [None] * len(children)
                slots = range(len(children))
            parent[slot] = container
            stack.extend(
                (child, container, s)
                for child, s in reversed(list(zip(children, slots, strict=True)))
            )
    return root[0]
