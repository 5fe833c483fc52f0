"""Gradient accumulation: one optimizer update from the mean gradient of several micro-batches.

:class:`MultiSteps` (Optax's name) wraps an optimizer so that it updates once every ``k``
calls, with the mean of the ``k`` gradients it was given; :func:`gradient_accumulation` is the
same as a plain function of ``k``. :func:`skip_not_finite` and :func:`skip_large_updates` are
Optax's rules for rejecting a micro-batch; :func:`apply_every` is Optax's simpler
accumulation after the other transformations of a chain.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from gradxform import _checks, _tree, _validate
from gradxform._base import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    as_transformation,
    expect_state,
    extra_args_filter,
    find_state,
)
from gradxform._types import StepCount

Params = Any
Updates = Any


class ShouldSkipUpdateFunction(Protocol):
    """Decides whether :class:`MultiSteps` rejects a micro-batch (Optax's protocol).

    Called as ``fn(updates, gradient_step, params)``; returns ``(skip, skip_state)``: a scalar
    bool array, and any tree kept in :attr:`MultiStepsState.skip_state` (for monitoring).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> def skip_negative(updates, gradient_step, params):  # a ShouldSkipUpdateFunction
      ...     return updates["w"].sum() < 0, ()
      >>> opt = gx.MultiSteps(gx.sgd(1.0), 1, should_skip_update_fn=skip_negative)
      >>> params = {"w": jnp.zeros(1)}
      >>> opt.update({"w": jnp.array([-1.0])}, opt.init(params), params)[0]["w"].tolist()  # skipped
      [0.0]
    """

    def __call__(
        self, updates: Updates, gradient_step: jax.Array, params: Params | None
    ) -> tuple[jax.Array, Any]: ...


def skip_not_finite(
    updates: Updates, gradient_step: jax.Array, params: Params | None
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Skips a micro-batch whose gradient has an inf or a NaN (a :class:`ShouldSkipUpdateFunction`).

    ``skip = num_not_finite > 0`` with ``num_not_finite = sum(~isfinite(g))`` over every leaf.

    Args:
      updates: the micro-batch's gradients.
      gradient_step: the number of updates made so far (unused).
      params: the params (unused).

    Returns:
      ``(skip, {"should_skip": skip, "num_not_finite": num_not_finite})``, as Optax's.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> skip, info = gx.skip_not_finite({"w": jnp.array([1.0, jnp.inf])}, 0, None)
      >>> bool(skip), int(info["num_not_finite"])
      (True, 1)
    """
    del gradient_step, params
    counts = [jnp.sum(~jnp.isfinite(g)) for g in jax.tree.leaves(updates)]
    num_not_finite = jnp.sum(jnp.array(counts)) if counts else jnp.zeros([], jnp.int32)
    should_skip = num_not_finite > 0
    return should_skip, {"should_skip": should_skip, "num_not_finite": num_not_finite}


def skip_large_updates(
    updates: Updates, gradient_step: jax.Array, params: Params | None, max_squared_norm: Any
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Skips a micro-batch whose gradient is too large (a :class:`ShouldSkipUpdateFunction`
    once ``max_squared_norm`` is bound, e.g. with ``functools.partial``).

    ``skip = not (||g||^2 < max_squared_norm)`` over all leaves (so a NaN norm skips too).

    Args:
      updates: the micro-batch's gradients.
      gradient_step: the number of updates made so far (unused).
      params: the params (unused).
      max_squared_norm: the largest accepted squared global norm (exclusive).

    Returns:
      ``(skip, {"should_skip": skip, "norm_squared": ||g||^2})``, as Optax's.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> skip, info = gx.skip_large_updates({"w": jnp.array([3.0, 4.0])}, 0, None, 25.0)
      >>> bool(skip), float(info["norm_squared"])  # not (25 < 25)
      (True, 25.0)
    """
    del gradient_step, params
    squares = [jnp.sum(_tree.abs_sq(g)) for g in jax.tree.leaves(updates)]
    norm_squared = jnp.sum(jnp.array(squares)) if squares else jnp.zeros([])
    should_skip = ~(norm_squared < max_squared_norm)
    return should_skip, {"should_skip": should_skip, "norm_squared": norm_squared}


def _never_skip(updates, gradient_step, params):
    del updates, gradient_step, params
    return jnp.zeros([], jnp.bool_), ()


class MultiStepsState(NamedTuple):
    """The state of :class:`MultiSteps`, with Optax's field names.

    ``mini_step``: micro-batches accumulated since the last update (int32);
    ``gradient_step``: updates made by the inner optimizer (int32);
    ``inner_opt_state``: the inner optimizer's state (also readable as ``inner_state``, the
    name the other gradxform wrappers use);
    ``acc_grads``: the sum of the gradients accumulated since the last update;
    ``skip_state``: what ``should_skip_update_fn`` returned for the last micro-batch (``()``
    without one).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> state = gx.MultiSteps(gx.sgd(1.0), every_k_schedule=2).init({"w": jnp.zeros(1)})
      >>> type(state).__name__, int(state.mini_step), state.acc_grads["w"].tolist()
      ('MultiStepsState', 0, [0.0])
    """

    mini_step: jax.Array
    gradient_step: jax.Array
    inner_opt_state: Any
    acc_grads: Any
    skip_state: Any = ()

    @property
    def inner_state(self) -> Any:
        """``inner_opt_state``, under the name gradxform's other wrappers use."""
        return self.inner_opt_state


class MultiSteps:
    """Accumulates ``k`` micro-batch gradients, then makes one update with their mean.

    With ``g_1 ... g_k`` the gradients of one accumulation round::

        u = 0                                          after g_1 ... g_{k-1}
        u = inner(mean(g_1, ..., g_k))                 after g_k

    When every micro-batch has the same size and the loss is a mean over examples, the params
    after ``k`` calls equal those of one ``inner`` step on the concatenated batch. Between two
    updates the returned updates are exactly zero and the inner state does not change.

    Memory: one extra gradient tree (the running sum ``acc_grads``) and two int32 counters.

    The step is branch-free: the inner update is computed on every call and kept (together
    with its new state) only on the last micro-batch, through ``jnp.where``. A ``lax.cond``
    would skip that work on the other calls, but it is not free either: under ``vmap`` it
    becomes both branches and a select anyway, on GPU XLA may run it by reading the predicate
    back to the host, and buffers returned from its branches are harder to update in place.
    The optimizer update is elementwise, small next to the forward and backward passes that
    produced the gradient.

    ``MultiSteps`` has the ``init``/``update`` pair of a gradient transformation and is
    accepted wherever one is (:func:`gradxform.chain`, Optax, Flax's ``TrainState``);
    :meth:`gradient_transformation` returns it as a :class:`gradxform.GradientTransformation`.

    With ``use_grad_mean=False`` the inner optimizer gets the sum ``g_1 + ... + g_k`` instead.
    With ``should_skip_update_fn``, a micro-batch it rejects is as if it never happened: the
    updates are zero and the state is unchanged but for ``skip_state``.

    Args:
      opt: the optimizer to update every ``k`` micro-batches.
      every_k_schedule: ``k``, an int >= 1, or a function of the int32 number of updates made
        so far returning ``k`` for the current round (values below 1 count as 1).
      use_grad_mean: pass the mean of the ``k`` gradients (True) or their sum (False).
      should_skip_update_fn: ``None``, or a :class:`ShouldSkipUpdateFunction` such as
        :func:`skip_not_finite` or ``functools.partial(skip_large_updates,
        max_squared_norm=...)``, called on each micro-batch's gradients.
      accumulator_dtype: dtype of ``acc_grads``; by default each gradient's dtype (pass
        ``jnp.float32`` to sum bfloat16 gradients without losing precision).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt = gx.MultiSteps(gx.sgd(1.0), every_k_schedule=2)
      >>> params = {"w": jnp.zeros(1)}
      >>> state = opt.init(params)
      >>> u, state = opt.update({"w": jnp.array([1.0])}, state, params)
      >>> u["w"].tolist(), bool(gx.MultiSteps.has_updated(state))
      ([0.0], False)
      >>> u, state = opt.update({"w": jnp.array([3.0])}, state, params)
      >>> u["w"].tolist(), bool(gx.MultiSteps.has_updated(state))
      ([-2.0], True)
    """

    def __init__(
        self,
        opt: GradientTransformation,
        every_k_schedule: int | Callable[[jax.Array], Any],
        use_grad_mean: bool = True,
        should_skip_update_fn: ShouldSkipUpdateFunction | None = None,
        *,
        accumulator_dtype: Any | None = None,
    ):
        who = "MultiSteps"
        _validate.boolean(who, "use_grad_mean", use_grad_mean)
        if should_skip_update_fn is not None:
            _validate.function(who, "should_skip_update_fn", should_skip_update_fn)
        self._use_grad_mean = use_grad_mean
        self._should_skip = should_skip_update_fn or _never_skip
        self._inner = as_transformation(opt, f"{who}: `opt`")
        self._keep_extra = extra_args_filter(self._inner.update)
        if callable(every_k_schedule):
            self._every_k: Callable[[jax.Array], Any]
            self._every_k = lambda step: jnp.maximum(every_k_schedule(step), 1)
        else:
            _validate.count(who, "every_k_schedule", every_k_schedule)
            self._every_k = lambda step: every_k_schedule
        _validate.dtype(who, "accumulator_dtype", accumulator_dtype)
        self._accumulator_dtype = accumulator_dtype

    def init(self, params: Params) -> MultiStepsState:
        """The initial state: zero counters, the inner state and a zero accumulator."""
        gradient_step = jnp.zeros([], jnp.int32)
        # As Optax: the skip state's structure comes from a call on zero gradients.
        _, skip_state = self._should_skip(_tree.tree_zeros_like(params), gradient_step, params)
        return MultiStepsState(
            mini_step=jnp.zeros([], jnp.int32),
            gradient_step=gradient_step,
            inner_opt_state=self._inner.init(params),
            acc_grads=_tree.tree_zeros_like(params, self._accumulator_dtype),
            skip_state=skip_state,
        )

    def update(
        self, updates: Updates, state: MultiStepsState, params: Params | None = None, **extra_args
    ) -> tuple[Updates, MultiStepsState]:
        """Accumulates ``updates``; on the ``k``-th call returns the inner update of the mean."""
        who = "MultiSteps"
        expect_state(who, state, MultiStepsState)
        _checks.check_updates(who, updates, state.acc_grads, "accumulated gradients")
        skip, skip_state = self._should_skip(updates, state.gradient_step, params)
        skip = jnp.asarray(skip)
        if (skip.dtype, skip.shape) != (jnp.bool_, ()):
            raise ValueError(
                f"{who}: `should_skip_update_fn` must return a scalar bool array first, got "
                f"dtype {skip.dtype} and shape {skip.shape}"
            )
        k = self._every_k(state.gradient_step)
        mini_step = state.mini_step + 1
        emit = (mini_step >= k) & ~skip
        acc_grads = _tree.tree_add(state.acc_grads, updates)

        def mean(total, g):
            if not self._use_grad_mean:
                return total.astype(g.dtype)
            dtype = _tree.compute_dtype(total.dtype, g.dtype)
            return (total.astype(dtype) / jnp.asarray(k, dtype)).astype(g.dtype)

        new_updates, new_inner = self._inner.update(
            jax.tree.map(mean, acc_grads, updates),
            state.inner_opt_state,
            params,
            **self._keep_extra(extra_args),
        )
        new_updates = jax.tree.map(lambda u: jnp.where(emit, u, jnp.zeros_like(u)), new_updates)
        inner_state = jax.tree.map(
            lambda new, old: jnp.where(emit, new, old), new_inner, state.inner_opt_state
        )
        # A skipped micro-batch leaves the counters and the accumulator as they were.
        kept = jnp.where(skip, state.mini_step, mini_step)
        acc_grads = jax.tree.map(lambda a, old: jnp.where(skip, old, a), acc_grads, state.acc_grads)
        return new_updates, MultiStepsState(
            mini_step=jnp.where(emit, 0, kept).astype(jnp.int32),
            gradient_step=jnp.where(
                emit, _tree.safe_increment(state.gradient_step), state.gradient_step
            ),
            inner_opt_state=inner_state,
            acc_grads=jax.tree.map(lambda a: jnp.where(emit, jnp.zeros_like(a), a), acc_grads),
            skip_state=skip_state,
        )

    @staticmethod
    def has_updated(state: Any) -> jax.Array:
        """Whether the last call updated, i.e. ended an accumulation round (a bool array).

        ``state`` is a :class:`MultiStepsState` or any optimizer state holding exactly one.
        """
        state = find_state(state, MultiStepsState, "MultiSteps.has_updated")
        return (state.mini_step == 0) & (state.gradient_step > 0)

    def gradient_transformation(self) -> GradientTransformation:
        """This wrapper as a :class:`gradxform.GradientTransformation`."""
        return GradientTransformationExtraArgs(self.init, self.update)


def gradient_accumulation(
    inner: GradientTransformation,
    *,
    k: int | Callable[[jax.Array], Any],
    accumulator_dtype: Any | None = None,
) -> GradientTransformation:
    """Updates with ``inner`` once every ``k`` calls, using the mean of the ``k`` gradients.

    ::

        a <- a + g_t;   u_t = 0                                 (t not a multiple of k)
        u_t = inner(a / k);   a <- 0                            (every k-th call)

    The function form of :class:`MultiSteps` (see there for the memory);
    read whether a call updated with ``MultiSteps.has_updated(state)``.

    Args:
      inner: the optimizer.
      k: the number of micro-batches per update, or a function of the update count.
      accumulator_dtype: dtype of the gradient accumulator.

    Returns:
      A transformation whose state is :class:`MultiStepsState`.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt, params = gx.gradient_accumulation(gx.sgd(1.0), k=2), {"w": jnp.zeros(1)}
      >>> u, state = opt.update({"w": jnp.array([1.0])}, opt.init(params), params)
      >>> u, state = opt.update({"w": jnp.array([3.0])}, state, params)
      >>> u["w"].tolist()  # -lr * (1 + 3) / 2
      [-2.0]
    """
    who = "gradient_accumulation"
    inner = as_transformation(inner, f"{who}: `inner`")
    if not callable(k):
        _validate.count(who, "k", k)
    _validate.dtype(who, "accumulator_dtype", accumulator_dtype)
    return MultiSteps(inner, k, accumulator_dtype=accumulator_dtype).gradient_transformation()


class ApplyEvery(NamedTuple):
    """The state of :func:`apply_every` (Optax's name): ``count`` (int32, the position in the
    round) and ``grad_acc``, the sum of the updates of the round so far.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> gx.apply_every(2).init({"w": jnp.zeros(2)})
      ApplyEvery(count=Array(0, dtype=int32), grad_acc={'w': Array([0., 0.], dtype=float32)})
    """

    count: StepCount
    grad_acc: Any


def apply_every(k: int = 1) -> GradientTransformation:
    """Sums the updates of ``k`` calls and emits the sum on every ``k``-th call (Optax's).

    With ``c = t mod k`` for the ``t``-th call (from 0)::

        a_t = u_t                    if c == 0,   a_t = a_{t-1} + u_t   otherwise
        out_t = a_t                  if c == k - 1,   0   otherwise

    The transformations before it in a chain still update their state on every call, so this
    is not one update on a ``k`` times larger batch: :class:`MultiSteps` is.

    Args:
      k: the number of calls per emitted update (>= 1).

    Returns:
      A transformation whose state is :class:`ApplyEvery`.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt, g = gx.apply_every(2), {"w": jnp.array([1.0])}
      >>> u1, state = opt.update(g, opt.init(g))
      >>> u2, state = opt.update({"w": jnp.array([3.0])}, state)
      >>> u1["w"].tolist(), u2["w"].tolist()  # 0, then the sum of the round
      ([0.0], [4.0])
    """
    who = "apply_every"
    _validate.count(who, "k", k)

    def init_fn(params):
        return ApplyEvery(jnp.zeros([], jnp.int32), _tree.tree_zeros_like(params))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        expect_state(who, state, ApplyEvery)
        _checks.check_updates(who, updates, state.grad_acc, "accumulated updates", inexact=False)
        c = state.count % k
        grad_acc = jax.tree.map(
            lambda u, a: (jnp.where(c != 0, a, jnp.zeros_like(a)) + u).astype(a.dtype),
            updates,
            state.grad_acc,
        )
        out = jax.tree.map(lambda a: jnp.where(c == k - 1, a, jnp.zeros_like(a)), grad_acc)
        return out, ApplyEvery(_tree.safe_increment(state.count) % k, grad_acc)

    return GradientTransformation(init_fn, update_fn)
