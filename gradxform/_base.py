"""The protocol: a gradient transformation is a pair of pure functions, and chains of them.

``init(params) -> state`` builds the state; ``update(updates, state, params=None,
**extra_args) -> (updates, state)`` transforms a gradient tree. The type is a ``NamedTuple``
of exactly those two fields, the same shape as Optax's ``GradientTransformation``, so code
written for Optax (``optax.chain``, Flax's ``TrainState``) accepts a gradxform transformation,
and :func:`chain` accepts an Optax one.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Hashable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _checks, _tree, _validate
from gradxform._types import Params, TransformInitFn, TransformUpdateExtraArgsFn, Updates


class GradientTransformation(NamedTuple):
    """A pure gradient transformation: ``init(params) -> state`` and
    ``update(updates, state, params=None, **extra_args) -> (updates, state)``.

    Extra keyword arguments (e.g. ``value=loss``) are passed by :func:`chain` to the
    transformations whose ``update`` declares them and left out for the rest.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> double = gx.GradientTransformation(gx.init_empty_state, lambda u, s, p=None: (2 * u, s))
      >>> double.update(jnp.array([1.0, -2.0]), double.init(None))
      (Array([ 2., -4.], dtype=float32), EmptyState())
    """

    init: TransformInitFn
    update: TransformUpdateExtraArgsFn


class GradientTransformationExtraArgs(GradientTransformation):
    """A :class:`GradientTransformation` whose ``update`` takes extra keyword arguments.

    The same two fields; the type says that ``update(updates, state, params=None,
    **extra_args)`` may be called with any extra arguments (Optax's
    ``GradientTransformationExtraArgs``). :func:`chain`, :func:`named_chain` and the wrappers
    that pass extra arguments on return one.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt = gx.chain(gx.scale(2.0))
      >>> opt.update(jnp.array([1.0, -2.0]), opt.init(None), value=3.0)[0]  # no one takes `value`
      Array([ 2., -4.], dtype=float32)
    """


class EmptyState(NamedTuple):
    """The state of a transformation that keeps none.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> gx.clip(1.0).init({"w": jnp.ones(2)})
      EmptyState()
      >>> gx.ScaleState is gx.ClipState is gx.EmptyState
      True
    """


# Optax's names for the state of its stateless transformations: all are ``EmptyState``.
AdaptiveGradClipState = EmptyState
AddDecayedWeightsState = EmptyState
ClipByGlobalNormState = EmptyState
ClipState = EmptyState
NonNegativeParamsState = EmptyState
ScaleByTrustRatioState = EmptyState
ScaleState = EmptyState


def init_empty_state(params: Params) -> EmptyState:
    """The ``init`` of a transformation without state: ``EmptyState()`` for any params.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> gx.init_empty_state({"w": jnp.ones(2)})
      EmptyState()
    """
    del params
    return EmptyState()


def identity() -> GradientTransformation:
    """Leaves updates unchanged: ``u <- u``.

    Returns:
      A stateless transformation.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> gx.identity().update(jnp.array([1.0, -2.0]), gx.EmptyState())[0]
      Array([ 1., -2.], dtype=float32)
    """

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        _checks.check_against_params("identity", updates, params)
        return updates, state

    return GradientTransformation(init_empty_state, update_fn)


def stateless(f: Callable[[Updates, Params | None], Updates]) -> GradientTransformation:
    """A transformation without state from a function: ``u <- f(u, params)``.

    Args:
      f: ``f(updates, params) -> updates``; ``params`` may be ``None``.

    Returns:
      A stateless transformation.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> double = gx.stateless(lambda u, p: {k: 2 * v for k, v in u.items()})
      >>> double.update({"w": jnp.ones(2)}, double.init(None))[0]["w"].tolist()
      [2.0, 2.0]
    """
    _validate.function("stateless", "f", f)

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        _checks.check_against_params("stateless", updates, params)
        return f(updates, params), state

    return GradientTransformation(init_empty_state, update_fn)


def stateless_with_tree_map(
    f: Callable[[jax.Array, jax.Array | None], jax.Array],
) -> GradientTransformation:
    """A transformation without state from a function of one leaf: ``u_i <- f(u_i, p_i)``.

    Args:
      f: ``f(update_leaf, param_leaf) -> update_leaf``; ``param_leaf`` is ``None`` when
        ``update`` is called without params.

    Returns:
      A stateless transformation.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> halve = gx.stateless_with_tree_map(lambda u, p: u / 2)
      >>> halve.update({"w": jnp.ones(2)}, halve.init(None))[0]["w"].tolist()
      [0.5, 0.5]
    """
    _validate.function("stateless_with_tree_map", "f", f)

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        _checks.check_against_params("stateless_with_tree_map", updates, params)
        if params is None:
            return jax.tree.map(lambda u: f(u, None), updates), state
        return jax.tree.map(f, updates, params), state

    return GradientTransformation(init_empty_state, update_fn)


def with_extra_args_support(tx: GradientTransformation) -> GradientTransformationExtraArgs:
    """``tx`` as a :class:`GradientTransformationExtraArgs`: its ``update`` accepts any extra
    keyword arguments and passes on those it declares (none, for an ``update(updates, state,
    params=None)``, as Optax's wrapper does; those it names, as :func:`chain` does).

    Args:
      tx: a transformation (gradxform's or Optax's).

    Returns:
      ``tx`` itself when it already is one, else ``tx`` wrapped.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> halve = gx.GradientTransformation(gx.init_empty_state, lambda u, s, p=None: (u / 2, s))
      >>> tx = gx.with_extra_args_support(halve)
      >>> tx.update(jnp.array([1.0, -2.0]), tx.init(None), loss=3.0)[0]  # `loss` is dropped
      Array([ 0.5, -1. ], dtype=float32)
    """
    tx = as_transformation(tx, "with_extra_args_support")
    if isinstance(tx, GradientTransformationExtraArgs):
        return tx
    keep = extra_args_filter(tx.update)

    def update_fn(updates, state, params=None, **extra_args):
        return tx.update(updates, state, params, **keep(extra_args))

    return GradientTransformationExtraArgs(tx.init, update_fn)


def extra_args_filter(update: Callable) -> Callable[[dict], dict]:
    """Which extra keyword arguments an ``update`` function accepts, decided once."""
    try:
        signature = inspect.signature(update)
    except (TypeError, ValueError):  # builtins or C functions: pass nothing extra
        return lambda extra: {}
    parameters = list(signature.parameters.values())
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return lambda extra: extra
    # The first three positional parameters are updates, state and params.
    named = {
        p.name
        for i, p in enumerate(parameters)
        if p.kind is inspect.Parameter.KEYWORD_ONLY
        or (p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and i >= 3)
    }
    return lambda extra: {k: v for k, v in extra.items() if k in named}


def as_transformation(transform: Any, where: str) -> GradientTransformation:
    init = getattr(transform, "init", None)
    update = getattr(transform, "update", None)
    if not (callable(init) and callable(update)):
        raise TypeError(
            f"{where}: expected a gradient transformation (an object with `init` and `update`), "
            f"got {transform!r}. Did you pass an optimizer factory without calling it?"
        )
    return transform


def _chain_update(transforms: Sequence, filters: Sequence, updates, states, params, extra_args):
    new_states = []
    for transform, state, keep in zip(transforms, states, filters, strict=True):
        updates, state = transform.update(updates, state, params, **keep(extra_args))
        new_states.append(state)
    return updates, new_states


def chain(*transforms: GradientTransformation) -> GradientTransformation:
    """Applies transformations one after the other: ``u <- t_n(...(t_2(t_1(u))))``.

    The state is a tuple of the transformations' states, in order. Optax transformations are
    accepted as they are. Extra keyword arguments reach the transformations whose ``update``
    declares them.

    Args:
      *transforms: the transformations, first applied first.

    Returns:
      One :class:`GradientTransformationExtraArgs`.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt = gx.chain(gx.scale_by_adam(), gx.scale_by_learning_rate(0.1))
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = opt.update({"w": jnp.ones(3)}, opt.init(params), params)
      >>> [round(float(u), 4) for u in updates["w"]]
      [-0.1, -0.1, -0.1]
    """
    transforms = tuple(
        as_transformation(t, f"chain argument {i}") for i, t in enumerate(transforms)
    )
    filters = [extra_args_filter(t.update) for t in transforms]

    def init_fn(params: Params) -> tuple:
        return tuple(t.init(params) for t in transforms)

    def update_fn(updates, state, params=None, **extra_args):
        if not isinstance(state, tuple) or len(state) != len(transforms):
            raise ValueError(
                f"chain of {len(transforms)} transformations got a state that is not a tuple "
                f"of {len(transforms)} states: {jax.tree.structure(state)}"
            )
        updates, new_states = _chain_update(transforms, filters, updates, state, params, extra_args)
        return updates, tuple(new_states)

    return GradientTransformationExtraArgs(init_fn, update_fn)


def named_chain(*named_transforms: tuple[Hashable, GradientTransformation]):
    """Like :func:`chain`, with the state a dict keyed by the given names.

    ::

        u <- t_n(... t_2(t_1(u))),   state = {name_i: state_i}

    Args:
      *named_transforms: ``(name, transformation)`` pairs, first applied first.

    Returns:
      One transformation whose state is ``{name: state}``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt = gx.named_chain(("momentum", gx.trace(0.9)), ("lr", gx.scale(-0.5)))
      >>> state = opt.init({"w": jnp.zeros(2)})
      >>> updates, state = opt.update({"w": jnp.array([2.0, -3.0])}, state)
      >>> list(state), updates["w"]  # the first step: -0.5 * g
      (['momentum', 'lr'], Array([-1. ,  1.5], dtype=float32))
    """
    names = []
    transforms = []
    for i, pair in enumerate(named_transforms):
        if isinstance(pair, GradientTransformation) or not (
            isinstance(pair, tuple) and len(pair) == 2
        ):
            raise TypeError(f"named_chain argument {i} must be a (name, transformation) pair")
        names.append(pair[0])
        transforms.append(as_transformation(pair[1], f"named_chain entry {pair[0]!r}"))
    if len(set(names)) != len(names):
        raise ValueError(f"named_chain: names must be unique, got {names}")
    filters = [extra_args_filter(t.update) for t in transforms]

    def init_fn(params: Params) -> dict:
        return {name: t.init(params) for name, t in zip(names, transforms, strict=True)}

    def update_fn(updates, state, params=None, **extra_args):
        if not isinstance(state, dict) or list(state) != names:
            raise ValueError(
                f"named_chain expected a state dict with keys {names}, got "
                f"{list(state) if isinstance(state, dict) else type(state).__name__}"
            )
        updates, new_states = _chain_update(
            transforms, filters, updates, [state[n] for n in names], params, extra_args
        )
        return updates, dict(zip(names, new_states, strict=True))

    return GradientTransformationExtraArgs(init_fn, update_fn)


def apply_updates(params: Params, updates: Updates) -> Params:
    """``p <- p + u`` leaf by leaf; each result keeps its parameter's dtype.

    A ``None`` update leaves its parameter unchanged, and a ``None`` parameter stays ``None``.
    Updates may be wider than the params (float32 updates for bf16 params): the sum is rounded
    once, into the param's dtype. Nothing is broadcast: an update whose shape differs from its
    parameter's raises, and so does a complex update for a real parameter.

    Args:
      params: the parameter tree.
      updates: a tree of the same structure (``None`` leaves allowed).

    Returns:
      The new parameters, with the dtypes of ``params``.

    Raises:
      ValueError: the trees' structures differ, or a leaf's shapes do (the error names the
        leaf's path and both shapes).
      TypeError: a complex update for a real parameter.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> gx.apply_updates({"w": jnp.ones(2, jnp.bfloat16)}, {"w": jnp.ones(2)})["w"].dtype
      dtype(bfloat16)
    """
    _tree.check_same_structure(params, updates, "params", "updates", none_is_leaf=True)
    paths_and_params, treedef = jax.tree_util.tree_flatten_with_path(
        params, is_leaf=lambda x: x is None
    )
    new_params = []
    for (path, p), u in zip(paths_and_params, treedef.flatten_up_to(updates), strict=True):
        if p is None or u is None:
            new_params.append(p)
            continue
        _checks.check_leaf_update("apply_updates", path, u, p, "param", inexact=False)
        new_params.append(jnp.asarray(p + u).astype(jnp.result_type(p)))
    return treedef.unflatten(new_params)


def find_state(state: Any, state_type: type, who: str) -> Any:
    """The one node of type ``state_type`` inside a (chained, wrapped) optimizer state.

    Raises ``ValueError`` when there is none or more than one.
    """
    found = [
        node
        for node in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, state_type))
        if isinstance(node, state_type)
    ]
    if len(found) != 1:
        raise ValueError(
            f"{who}: expected exactly one {state_type.__name__} in the optimizer state, found "
            f"{len(found)}. Pass the state of (or containing) one such transformation."
        )
    return found[0]


def expect_state(who: str, state: Any, *state_types: type) -> None:
    """Raises ``TypeError`` unless ``state`` is one of ``state_types``, naming both.

    Every transformation's ``update`` calls it first, so that the state of another optimizer
    (an SGD state given to Adam, say) fails with a message instead of an ``AttributeError``.
    """
    if not isinstance(state, state_types):
        expected = " or ".join(t.__name__ for t in state_types)
        raise TypeError(
            f"{who}: expected its state, a {expected}, got a {type(state).__name__}. Was the "
            "state made by another optimizer's `init`, or are the states of a chain out of "
            "order?"
        )


def require_params(who: str, params: Any, why: str) -> None:
    """Raises ``ValueError`` when a transformation that reads the params was not given them."""
    if params is None:
        raise ValueError(f"{who} needs `params`: call `update(updates, state, params)`; {why}")
