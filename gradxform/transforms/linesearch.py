"""Optax's line searches: a step size for the incoming direction, found by evaluating the loss.

Both take the loss as extra arguments of ``update``, with Optax's names::

    updates, state = opt.update(grads, state, params, value=loss, grad=grads, value_fn=loss_fn)

(keyword arguments ``value_fn`` accepts, data say, are passed on to it), and store the value
(and gradient) at the step they take, which :func:`value_and_grad_from_state` hands to the
next iteration instead of evaluating the loss again. Numbers as Optax's, branch for branch.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _checks, _tree, _validate
from gradxform._base import GradientTransformation, expect_state, require_params
from gradxform._types import StepCount


class BacktrackingLinesearchInfo(NamedTuple):
    """``num_linesearch_steps`` (int32) and the final ``decrease_error`` (0: success).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> f, w = lambda w: jnp.sum(w**2), jnp.array([1.0, 2.0])
      >>> tx, g = gx.scale_by_backtracking_linesearch(15), 2 * w
      >>> _, state = tx.update(-g, tx.init(w), w, value=f(w), grad=g, value_fn=f)
      >>> state.info  # eta = 1 fails (f(w - g) = f(w)), eta = 0.8 succeeds
      BacktrackingLinesearchInfo(num_linesearch_steps=Array(2, dtype=int32),
      decrease_error=Array(0., dtype=float32))
    """

    num_linesearch_steps: jax.Array
    decrease_error: jax.Array


class ScaleByBacktrackingLinesearchState(NamedTuple):
    """Optax's fields: the step size ``learning_rate`` taken, the ``value`` (and, with
    ``store_grad``, the ``grad``, else ``None``) there, and ``info``; ``count``: updates made.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> f, w = lambda w: jnp.sum(w**2), jnp.array([1.0, 2.0])
      >>> tx, g = gx.scale_by_backtracking_linesearch(15), 2 * w
      >>> _, state = tx.update(-g, tx.init(w), w, value=f(w), grad=g, value_fn=f)
      >>> state.learning_rate, state.value.round(4), state.count  # f(w - 0.8 g) = 1.8
      (Array(0.8, dtype=float32), Array(1.8, dtype=float32), Array(1, dtype=int32))
    """

    learning_rate: jax.Array
    value: jax.Array
    grad: Any
    info: BacktrackingLinesearchInfo
    count: StepCount


class ZoomLinesearchInfo(NamedTuple):
    """``num_linesearch_steps`` (int32) and the final ``decrease_error`` and
    ``curvature_error`` (0: the criterion holds).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> gx.scale_by_zoom_linesearch(15).init(jnp.array([1.0, 2.0])).info
      ZoomLinesearchInfo(num_linesearch_steps=Array(0, dtype=int32), decrease_error=Array(inf,
      dtype=float32), curvature_error=Array(inf, dtype=float32))
    """

    num_linesearch_steps: jax.Array
    decrease_error: jax.Array
    curvature_error: jax.Array


class ScaleByZoomLinesearchState(NamedTuple):
    """Optax's fields: the step size ``learning_rate`` taken, the ``value`` and ``grad`` there,
    and ``info``; ``count``: updates made.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> state = gx.scale_by_zoom_linesearch(15).init(jnp.array([1.0, 2.0]))
      >>> state.learning_rate, state.value, state.grad, state.count  # before the first search
      (Array(1., dtype=float32), Array(inf, dtype=float32), Array([0., 0.], dtype=float32), Array(0,
      dtype=int32))
    """

    learning_rate: jax.Array
    value: jax.Array
    grad: Any
    info: ZoomLinesearchInfo
    count: StepCount


def real_dot(a: Any, b: Any) -> jax.Array:
    return jnp.real(_tree.tree_vdot(a, b))


def _cast_like(tree: Any, like: Any) -> Any:
    return jax.tree.map(lambda x, y: x.astype(y.dtype), tree, like)


def _conj(tree: Any) -> Any:
    return jax.tree.map(jnp.conj, tree)


def params_at(params: Any, step: jax.Array, updates: Any) -> Any:
    """``params + step * updates``, computed in at least float32, in the params' dtypes."""

    def leaf(p, u):
        dtype = _tree.compute_dtype(p.dtype, u.dtype)
        return (p.astype(dtype) + step.astype(dtype) * u.astype(dtype)).astype(p.dtype)

    return jax.tree.map(leaf, params, updates)


def scaled(step: jax.Array, updates: Any) -> Any:
    """``step * updates``, each leaf in its update dtype (at least float32)."""

    def leaf(u):
        dtype = _tree.compute_dtype(u.dtype)
        return step.astype(_tree.real_dtype(dtype)) * u.astype(dtype)

    return jax.tree.map(leaf, updates)


def loss_kwargs(who: str, value_fn: Callable, extra_args: dict) -> dict:
    """The extra arguments ``value_fn`` takes by name; any other is a ``TypeError``, as in
    Optax (an argument meant for the loss must not be dropped silently)."""
    names = set(inspect.signature(value_fn).parameters)
    unexpected = sorted(set(extra_args) - names)
    if unexpected:
        raise TypeError(
            f"{who}: keyword arguments {unexpected} were passed to `update` but `value_fn` does "
            "not take them. Pass only the loss's own arguments besides value, grad, value_fn."
        )
    return extra_args


def value_dtype(params: Any) -> Any:
    dtypes = [_tree.real_dtype(jnp.result_type(x)) for x in jax.tree.leaves(params)]
    return _tree.compute_dtype(*dtypes)


def check_loss_call(who, updates, state, state_type, params, value, grad, value_fn):
    expect_state(who, state, state_type)
    require_params(who, params, "the loss is evaluated at params + step * updates.")
    _checks.check_updates(who, updates, params, "param")
    if value is None or grad is None or value_fn is None:
        raise ValueError(
            f"{who} needs the loss: call `update(updates, state, params, value=loss, "
            "grad=grads, value_fn=loss_fn)`."
        )
    _validate.function(who, "value_fn", value_fn)
    _checks.check_updates(who, grad, params, "param")


def scale_by_backtracking_linesearch(
    max_backtracking_steps: int,
    slope_rtol: float = 1e-4,
    decrease_factor: float = 0.8,
    increase_factor: float = 1.5,
    max_learning_rate: float = 1.0,
    atol: float = 0.0,
    rtol: float = 0.0,
    store_grad: bool = False,
    verbose: bool = False,
) -> GradientTransformation:
    """Optax's backtracking (Armijo) line search: ``u <- eta u`` with a sufficient decrease.

    Starting from ``eta = min(increase_factor * eta_prev, max_learning_rate)``, ``eta`` is
    multiplied by ``decrease_factor`` until::

        f(w + eta u) <= (1 + rtol) f(w) + eta slope_rtol <u, grad f(w)> + atol

    or ``max_backtracking_steps`` is reached; a NaN or infinite value gives ``eta = 0``.

    Args:
      max_backtracking_steps: the most decreases of ``eta``.
      slope_rtol: ``c`` of the sufficient decrease, in [0, 1].
      decrease_factor: the factor that shrinks ``eta``, in (0, 1].
      increase_factor: the factor that grows the previous ``eta`` to the first guess
        (``inf``: start from ``max_learning_rate``).
      max_learning_rate: the largest ``eta``.
      atol, rtol: absolute and relative slack of the criterion.
      store_grad: also keep the gradient at the accepted step (for
        :func:`value_and_grad_from_state`).
      verbose: print the criterion's error when the search fails.

    Returns:
      A transformation whose state is :class:`ScaleByBacktrackingLinesearchState`.

    References:
      Vaswani et al., *Painless Stochastic Gradient*, 2019. Nocedal & Wright, 1999.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> f, w = lambda w: jnp.sum(w**2), jnp.array([1.0, 2.0])
      >>> tx, g = gx.scale_by_backtracking_linesearch(15), 2 * w
      >>> # eta = 1 gives f(w - g) = f(w), no decrease; eta = 0.8 gives 1.8 < 5
      >>> tx.update(-g, tx.init(w), w, value=f(w), grad=g, value_fn=f)[0]
      Array([-1.6, -3.2], dtype=float32)
    """
    who = "scale_by_backtracking_linesearch"
    _validate.count(who, "max_backtracking_steps", max_backtracking_steps, minimum=0)
    _validate.probability(who, "slope_rtol", slope_rtol, closed=True)
    _validate.number(who, "decrease_factor", decrease_factor, low=0, high=1, low_open=True)
    if not (_validate.is_static_number(increase_factor) and float(increase_factor) == jnp.inf):
        _validate.at_least(who, "increase_factor", increase_factor, 1.0)
    _validate.positive(who, "max_learning_rate", max_learning_rate)
    _validate.non_negative(who, "atol", atol)
    _validate.non_negative(who, "rtol", rtol)
    _validate.boolean(who, "store_grad", store_grad)
    _validate.boolean(who, "verbose", verbose)

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        dtype = value_dtype(params)
        return ScaleByBacktrackingLinesearchState(
            learning_rate=jnp.ones([], dtype),
            value=jnp.full([], jnp.inf, dtype),
            grad=_tree.tree_zeros_like(params) if store_grad else None,
            info=BacktrackingLinesearchInfo(jnp.zeros([], jnp.int32), jnp.full([], jnp.inf, dtype)),
            count=jnp.zeros([], jnp.int32),
        )

    def update_fn(
        updates, state, params=None, *, value=None, grad=None, value_fn=None, **extra_args
    ):
        state_type = ScaleByBacktrackingLinesearchState
        check_loss_call(who, updates, state, state_type, params, value, grad, value_fn)
        fn_kwargs = loss_kwargs(who, value_fn, extra_args)
        dtype = state.learning_rate.dtype
        value = jnp.asarray(value).astype(dtype)
        slope = real_dot(updates, _conj(grad))

        def decrease_error(step, new_value):
            error = new_value - (1.0 + rtol) * value - step * slope_rtol * slope
            return jnp.maximum(jnp.where(jnp.isnan(error), jnp.inf, error), 0.0).astype(dtype)

        def loss(p):
            return jnp.asarray(value_fn(p, **fn_kwargs))

        def searching(s):
            return ~(s[2] <= atol) & (s[3] <= max_backtracking_steps)

        def backtrack(s):
            step, _, _, i, grad_then = s
            step = jnp.where(i > 0, decrease_factor * step, step).astype(dtype)
            at = params_at(params, step, updates)
            if not store_grad:
                new_value = loss(at).astype(dtype)
                return step, new_value, decrease_error(step, new_value), i + 1, grad_then
            # As Optax: linearise at each trial, and transpose (the gradient) only at the last
            # one; the cond keeps the transposition out of the other trials.
            new_value, linear = jax.linearize(loss, at)
            error = decrease_error(step, new_value.astype(dtype))
            grad_then = jax.lax.cond(
                (error <= atol) | (i == max_backtracking_steps),
                lambda: _cast_like(jax.linear_transpose(linear, at)(jnp.ones_like(new_value))[0],
                                   grad_then),
                lambda: grad_then,
            )  # fmt: skip
            return step, new_value.astype(dtype), error, i + 1, grad_then

        first = jnp.minimum(increase_factor * state.learning_rate, max_learning_rate).astype(dtype)
        no_grad = _tree.tree_zeros_like(params) if store_grad else None
        start = (first, value, jnp.full([], jnp.inf, dtype), jnp.zeros([], jnp.int32), no_grad)
        step, new_value, error, steps, new_grad = jax.lax.while_loop(searching, backtrack, start)
        step = jnp.where(jnp.isinf(error), 0.0, step).astype(dtype)
        if verbose:
            jax.lax.cond(
                error > atol,
                lambda: jax.debug.print(
                    "scale_by_backtracking_linesearch: no step size with a sufficient "
                    "decrease (value {v}, slope {s}, decrease error {e}); step {t}",
                    v=value, s=slope, e=error, t=step,
                ),
                lambda: None,
            )  # fmt: skip
        info = BacktrackingLinesearchInfo(steps, error)
        count = _tree.safe_increment(state.count)
        new_state = ScaleByBacktrackingLinesearchState(step, new_value, new_grad, info, count)
        return scaled(step, updates), new_state

    return GradientTransformation(init_fn, update_fn)


def value_and_grad_from_state(value_fn: Callable[..., Any]) -> Callable[..., tuple[Any, Any]]:
    """Like ``jax.value_and_grad(value_fn)``, but reusing the value and gradient a line search
    stored in the state, when that value is finite (Optax's function).

    ``value_and_grad(params, *args, state=opt_state, **kwargs)`` finds the one
    :class:`ScaleByZoomLinesearchState` or :class:`ScaleByBacktrackingLinesearchState` (built
    with ``store_grad=True``) in ``opt_state``; at the first step its value is ``inf`` and the
    function is evaluated.

    Args:
      value_fn: the loss, a function of the params (and further arguments).

    Returns:
      ``value_and_grad(params, *args, state, **kwargs) -> (value, grad)``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> f, w = lambda w: jnp.sum(w**2), jnp.array([1.0, 2.0])
      >>> value_and_grad = gx.value_and_grad_from_state(f)
      >>> state = gx.scale_by_backtracking_linesearch(15, store_grad=True).init(w)
      >>> value_and_grad(w, state=state)  # nothing stored yet (value inf): f is evaluated
      (Array(5., dtype=float32), Array([2., 4.], dtype=float32))
      >>> state = state._replace(value=jnp.array(7.0), grad=jnp.array([3.0, 4.0]))
      >>> value_and_grad(w, state=state)  # a finite stored value: returned, f not evaluated
      (Array(7., dtype=float32), Array([3., 4.], dtype=float32))
    """
    _validate.function("value_and_grad_from_state", "value_fn", value_fn)
    kinds = (ScaleByZoomLinesearchState, ScaleByBacktrackingLinesearchState)

    def value_and_grad(params, *fn_args, state, **fn_kwargs):
        found = [
            node
            for node in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, kinds))
            if isinstance(node, kinds)
        ]
        if len(found) != 1 or found[0].grad is None:
            raise ValueError(
                "value_and_grad_from_state: expected one line search's state holding a value "
                f"and a gradient, found {len(found)}; a backtracking search stores its "
                "gradient only with `store_grad=True`."
            )
        value, grad = found[0].value, found[0].grad

        def evaluate(p, a, k):
            new_value, new_grad = jax.value_and_grad(value_fn)(p, *a, **k)
            cast = jax.tree.map(lambda g, s: g.astype(s.dtype), new_grad, grad)
            return jnp.asarray(new_value).astype(value.dtype), cast

        # Evaluated only when the stored value is not finite (the first step): a cond.
        return jax.lax.cond(
            jnp.isfinite(value), lambda p, a, k: (value, grad), evaluate, params, fn_args, fn_kwargs
        )

    return value_and_grad
