"""Gradient accumulation: one optimizer update from the mean gradient of several micro-batches.

:class:`MultiSteps` (Optax's name) wraps an optimizer so that it updates once every ``k``
calls, with the mean of the ``k`` gradients it was given; :func:`gradient_accumulation` is the
same as a plain function of ``k``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

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

Params = Any
Updates = Any


class MultiStepsState(NamedTuple):
    """The state of :class:`MultiSteps`.

    ``mini_step``: micro-batches accumulated since the last update (int32);
    ``gradient_step``: updates made by the inner optimizer (int32);
    ``inner_state``: the inner optimizer's state;
    ``acc_grads``: the sum of the gradients accumulated since the last update.
    """

    mini_step: jax.Array
    gradient_step: jax.Array
    inner_state: Any
    acc_grads: Any


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

    Args:
      opt: the optimizer to update every ``k`` micro-batches.
      every_k_schedule: ``k``, an int >= 1, or a function of the int32 number of updates made
        so far returning ``k`` for the current round (values below 1 count as 1).
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
        *,
        accumulator_dtype: Any | None = None,
    ):
        who = "MultiSteps"
        self._inner = as_transformation(opt, f"{who}: `opt`")
        self._keep_extra = extra_args_filter(self._inner.update)
        if callable(every_k_schedule):
            self._every_k = lambda step: jnp.maximum(every_k_schedule(step), 1)
        else:
            _validate.count(who, "every_k_schedule", every_k_schedule)
            self._every_k = lambda step: every_k_schedule
        _validate.dtype(who, "accumulator_dtype", accumulator_dtype)
        self._accumulator_dtype = accumulator_dtype

    def init(self, params: Params) -> MultiStepsState:
        """The initial state: zero counters, the inner state and a zero accumulator."""
        return MultiStepsState(
            mini_step=jnp.zeros([], jnp.int32),
            gradient_step=jnp.zeros([], jnp.int32),
            inner_state=self._inner.init(params),
            acc_grads=_tree.tree_zeros_like(params, self._accumulator_dtype),
        )

    def update(
        self, updates: Updates, state: MultiStepsState, params: Params | None = None, **extra_args
    ) -> tuple[Updates, MultiStepsState]:
        """Accumulates ``updates``; on the ``k``-th call returns the inner update of the mean."""
        expect_state("MultiSteps", state, MultiStepsState)
        _checks.check_updates("MultiSteps", updates, state.acc_grads, "accumulated gradients")
        k = self._every_k(state.gradient_step)
        mini_step = state.mini_step + 1
        emit = mini_step >= k
        acc_grads = _tree.tree_add(state.acc_grads, updates)

        def mean(total, g):
            dtype = _tree.compute_dtype(total.dtype, g.dtype)
            return (total.astype(dtype) / jnp.asarray(k, dtype)).astype(g.dtype)

        new_updates, new_inner = self._inner.update(
            jax.tree.map(mean, acc_grads, updates),
            state.inner_state,
            params,
            **self._keep_extra(extra_args),
        )
        new_updates = jax.tree.map(lambda u: jnp.where(emit, u, jnp.zeros_like(u)), new_updates)
        inner_state = jax.tree.map(
            lambda new, old: jnp.where(emit, new, old), new_inner, state.inner_state
        )
        return new_updates, MultiStepsState(
            mini_step=jnp.where(emit, 0, mini_step).astype(jnp.int32),
            gradient_step=jnp.where(
                emit, _tree.safe_increment(state.gradient_step), state.gradient_step
            ),
            inner_state=inner_state,
            acc_grads=jax.tree.map(lambda a: jnp.where(emit, jnp.zeros_like(a), a), acc_grads),
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
    """
    who = "gradient_accumulation"
    inner = as_transformation(inner, f"{who}: `inner`")
    if not callable(k):
        _validate.count(who, "k", k)
    _validate.dtype(who, "accumulator_dtype", accumulator_dtype)
    return MultiSteps(inner, k, accumulator_dtype=accumulator_dtype).gradient_transformation()
