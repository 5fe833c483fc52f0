"""Guards against non-finite steps: skipping them, and dynamic loss scaling for float16.

:func:`apply_if_finite` wraps an optimizer so that a step whose gradients (or updates) hold a
NaN or an infinity changes nothing. :class:`DynamicLossScale` is the loss-scaling arithmetic
of mixed-precision training, for loops that manage it themselves, and
:func:`dynamic_loss_scale` wraps an optimizer so that it takes gradients of a scaled loss and
keeps the scale in its state.

Both wrappers are branch-free: the inner update is always computed, and ``jnp.where`` keeps
either its result or the old state. A ``lax.cond`` would skip the inner work on a rejected
step, but rejected steps are rare, and a ``cond`` costs on every step: under ``vmap`` it
becomes a select of both branches anyway, and on accelerators the predicate may be read back
to the host.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _tree
from gradxform._base import GradientTransformation, _as_transformation, _extra_args_filter
from gradxform.wrappers import _find_state

Params = Any
Updates = Any


def all_finite(tree: Any, axis_name: str | None = None) -> jax.Array:
    """Whether every element of every leaf is finite (no NaN, no +-inf), as a bool scalar.

    Args:
      tree: a tree of arrays; an empty tree is finite.
      axis_name: a mapped axis (``pmap`` or ``shard_map``) over which the answer is combined,
        so that it is the same on every device even when each holds different values.

    Returns:
      A bool array of shape ``()``.
    """
    finite = jnp.array(True)
    for leaf in jax.tree.leaves(tree):
        finite = finite & jnp.all(jnp.isfinite(leaf))
    if axis_name is not None:
        # One device with a non-finite value makes the step non-finite everywhere.
        finite = jax.lax.psum(jnp.logical_not(finite).astype(jnp.int32), axis_name) == 0
    return finite


def _keep_if(condition: jax.Array, new: Any, old: Any) -> Any:
    """``new`` where ``condition`` holds, else ``old``, leaf by leaf (both trees alike)."""
    return jax.tree.map(lambda n, o: jnp.where(condition, n, o), new, old)


def _zeros_unless(condition: jax.Array, updates: Updates) -> Updates:
    return jax.tree.map(lambda u: jnp.where(condition, u, jnp.zeros_like(u)), updates)


# --- apply_if_finite --------------------------------------------------------------------------


class ApplyIfFiniteState(NamedTuple):
    """The state of :func:`apply_if_finite`.

    ``notfinite_count``: non-finite steps in a row, up to and including the last (int32);
    ``last_finite``: whether the last step was finite (bool);
    ``total_notfinite``: non-finite steps since ``init`` (int32, saturating);
    ``inner_state``: the inner optimizer's state, as of the last applied step.
    """

    notfinite_count: jax.Array
    last_finite: jax.Array
    total_notfinite: jax.Array
    inner_state: Any


def apply_if_finite(
    inner: GradientTransformation, max_consecutive_errors: int, axis_name: str | None = None
) -> GradientTransformation:
    """Skips steps whose gradients or updates hold a NaN or an infinity.

    With ``finite_t`` true when both the gradients and the inner updates of step ``t`` are
    finite, and ``n_t`` the number of non-finite steps in a row ending at ``t``::

        apply_t = finite_t or n_t > max_consecutive_errors
        u_t = inner_update_t              if apply_t else 0
        s_t = inner_state_t               if apply_t else s_{t-1}

    A skipped step returns zero updates (the params do not move) and leaves the inner state
    exactly as it was, so one bad batch costs one step and nothing else. After more than
    ``max_consecutive_errors`` non-finite steps in a row the non-finite update is let through,
    so that a run which has truly diverged shows it in its params instead of silently
    standing still. The counters in :class:`ApplyIfFiniteState` report what happened.

    Args:
      inner: the optimizer to guard.
      max_consecutive_errors: how many non-finite steps in a row are skipped (>= 0).
      axis_name: a mapped axis (``pmap``/``shard_map``) over which the finiteness test is
        combined, so that every device skips the same steps when each holds a different shard
        of the gradients.

    Returns:
      A transformation whose state is :class:`ApplyIfFiniteState`.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt = gx.apply_if_finite(gx.sgd(0.1), max_consecutive_errors=3)
      >>> params = {"w": jnp.ones(2)}
      >>> state = opt.init(params)
      >>> updates, state = opt.update({"w": jnp.array([1.0, jnp.nan])}, state, params)
      >>> updates["w"].tolist(), int(state.notfinite_count), bool(state.last_finite)
      ([0.0, 0.0], 1, False)
    """
    who = "apply_if_finite"
    inner = _as_transformation(inner, who)
    keep_extra = _extra_args_filter(inner.update)
    if not isinstance(max_consecutive_errors, int) or isinstance(max_consecutive_errors, bool):
        raise TypeError(
            f"{who}: `max_consecutive_errors` must be an int, got {max_consecutive_errors!r}"
        )
    if max_consecutive_errors < 0:
        raise ValueError(
            f"{who}: `max_consecutive_errors` must be >= 0, got {max_consecutive_errors}"
        )

    def init_fn(params):
        return ApplyIfFiniteState(
            notfinite_count=jnp.zeros([], jnp.int32),
            last_finite=jnp.array(True),
            total_notfinite=jnp.zeros([], jnp.int32),
            inner_state=inner.init(params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        new_updates, new_inner = inner.update(
            updates, state.inner_state, params, **keep_extra(extra_args)
        )
        finite = all_finite((updates, new_updates), axis_name)
        notfinite_count = jnp.where(finite, 0, _tree.safe_increment(state.notfinite_count))
        apply = finite | (notfinite_count > max_consecutive_errors)
        total = jnp.where(
            finite, state.total_notfinite, _tree.safe_increment(state.total_notfinite)
        )
        return _zeros_unless(apply, new_updates), ApplyIfFiniteState(
            notfinite_count=notfinite_count.astype(jnp.int32),
            last_finite=finite,
            total_notfinite=total.astype(jnp.int32),
            inner_state=_keep_if(apply, new_inner, state.inner_state),
        )

    return GradientTransformation(init_fn, update_fn)


# --- dynamic loss scaling ----------------------------------------------------------------------


def _upcast_leaf(x: Any) -> jax.Array:
    x = jnp.asarray(x)
    return x.astype(_tree.compute_dtype(x.dtype))


@dataclasses.dataclass(frozen=True)
class DynamicLossScale:
    """A loss scale for float16 training that halves on overflow and grows while none occurs.

    ``loss_scale`` (a float32 scalar) and ``good_steps`` (int32, finite steps since it last
    changed) are the pytree's leaves; ``period``, ``factor`` and ``min_loss_scale`` are static.
    :meth:`adjust` implements::

        finite:      good_steps += 1;  if good_steps == period:
                                           loss_scale *= factor  (unless that overflows float32)
                                           good_steps = 0
        not finite:  loss_scale = max(min_loss_scale, loss_scale / factor);  good_steps = 0

    The loop, in full (:func:`dynamic_loss_scale` does the last three lines for you)::

        scaler = gx.DynamicLossScale(2.0**15)
        grads = jax.grad(lambda p: scaler.scale(loss_fn(p)))(params)
        grads = scaler.unscale(grads)                 # float32 gradients of the true loss
        finite = gx.all_finite(grads)
        scaler = scaler.adjust(finite)                # and skip the update if not finite

    Args:
      loss_scale: the current scale (a number or a float32 scalar array).
      good_steps: finite steps since the scale last changed (default 0).
      period: finite steps after which the scale grows (>= 1).
      factor: the growth and shrink factor (> 1).
      min_loss_scale: the scale never falls below this (> 0).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> scaler = gx.DynamicLossScale(1024.0, period=2)
      >>> float(scaler.adjust(jnp.array(False)).loss_scale)
      512.0
      >>> float(scaler.adjust(jnp.array(True)).adjust(jnp.array(True)).loss_scale)
      2048.0
    """

    loss_scale: jax.Array
    good_steps: jax.Array = None  # type: ignore[assignment]  # filled in by __post_init__
    period: int = 2000
    factor: float = 2.0
    min_loss_scale: float = 1.0

    def __post_init__(self) -> None:
        who = "DynamicLossScale"
        # Numbers become arrays; anything else (arrays, tracers, or the placeholders JAX puts
        # in a pytree while transforming it) is left alone.
        if isinstance(self.loss_scale, int | float):
            object.__setattr__(self, "loss_scale", jnp.asarray(self.loss_scale, jnp.float32))
        if self.good_steps is None or isinstance(self.good_steps, int):
            object.__setattr__(self, "good_steps", jnp.asarray(self.good_steps or 0, jnp.int32))
        if not isinstance(self.period, int) or isinstance(self.period, bool) or self.period < 1:
            raise ValueError(f"{who}: `period` must be an int >= 1, got {self.period!r}")
        if not float(self.factor) > 1:
            raise ValueError(f"{who}: `factor` must be > 1, got {self.factor!r}")
        if not float(self.min_loss_scale) > 0:
            raise ValueError(f"{who}: `min_loss_scale` must be > 0, got {self.min_loss_scale!r}")

    def scale(self, tree: Any) -> Any:
        """``x * loss_scale`` for every leaf, computed and returned in at least float32.

        The float32 product keeps the scaled loss itself from overflowing float16; its
        gradient enters the float16 part of the model as ``loss_scale`` cast to float16.
        """
        return jax.tree.map(lambda x: _upcast_leaf(x) * self.loss_scale, tree)

    def unscale(self, tree: Any) -> Any:
        """``x / loss_scale`` for every leaf, computed and returned in at least float32."""
        return jax.tree.map(lambda x: _upcast_leaf(x) / self.loss_scale, tree)

    def adjust(self, grads_finite: jax.Array) -> DynamicLossScale:
        """The scale for the next step, given whether this step's gradients were finite."""
        one_more = self.good_steps + 1
        grow = grads_finite & (one_more >= self.period)
        grown = self.loss_scale * jnp.float32(self.factor)
        grown = jnp.where(jnp.isfinite(grown), grown, self.loss_scale)
        shrunk = jnp.maximum(self.loss_scale / jnp.float32(self.factor), self.min_loss_scale)
        loss_scale = jnp.where(grads_finite, jnp.where(grow, grown, self.loss_scale), shrunk)
        good_steps = jnp.where(grads_finite & ~grow, one_more, 0)
        return dataclasses.replace(
            self,
            loss_scale=loss_scale.astype(jnp.float32),
            good_steps=good_steps.astype(jnp.int32),
        )


jax.tree_util.register_dataclass(
    DynamicLossScale,
    data_fields=["loss_scale", "good_steps"],
    meta_fields=["period", "factor", "min_loss_scale"],
)


class DynamicLossScaleState(NamedTuple):
    """The state of :func:`dynamic_loss_scale`.

    ``loss_scale``: the scale to multiply the next loss by (float32);
    ``good_steps``: finite steps since the scale last changed (int32);
    ``last_finite``: whether the last step's gradients were finite (bool);
    ``total_notfinite``: skipped steps since ``init`` (int32, saturating);
    ``inner_state``: the inner optimizer's state, as of the last applied step.
    """

    loss_scale: jax.Array
    good_steps: jax.Array
    last_finite: jax.Array
    total_notfinite: jax.Array
    inner_state: Any


def _upcast(params: Params, dtype: Any) -> Params:
    """Floating leaves narrower than ``dtype`` cast up to it; the others unchanged."""

    def leaf(p):
        p_dtype = jnp.result_type(p)
        if (
            jnp.issubdtype(p_dtype, jnp.floating)
            and jnp.finfo(p_dtype).bits < jnp.finfo(dtype).bits
        ):
            return jnp.asarray(p).astype(dtype)
        return p

    return jax.tree.map(leaf, params)


def dynamic_loss_scale(
    inner: GradientTransformation,
    initial_scale: float = 2.0**15,
    period: int = 2000,
    factor: float = 2.0,
    min_scale: float = 1.0,
    *,
    state_dtype: Any | None = jnp.float32,
    axis_name: str | None = None,
) -> GradientTransformation:
    """Mixed-precision training: unscales gradients of a scaled loss, skips overflowing
    steps, and adapts the scale.

    The gradients passed to ``update`` must be those of ``loss * S``, with ``S`` the scale in
    the state (:func:`current_loss_scale`). Each step::

        g <- g / S                        (in float32)
        finite:      u = inner(g);   S *= factor after `period` finite steps in a row
        not finite:  u = 0, the inner state is left unchanged;   S <- max(min_scale, S / factor)

    (see :class:`DynamicLossScale`). The step is also skipped, without touching ``S``, when the
    inner updates are not finite although the gradients are.

    The training loop::

        opt = gx.dynamic_loss_scale(gx.adam(1e-3))
        state = opt.init(params)                      # params may be float16
        def step(params, state, batch):
            scale = gx.current_loss_scale(state)
            grads = jax.grad(lambda p: loss_fn(p, batch).astype(jnp.float32) * scale)(params)
            updates, state = opt.update(grads, state, params)
            return gx.apply_updates(params, updates), state

    Updates come out in float32 (or wider) and :func:`gradxform.apply_updates` rounds them once
    into each param's dtype.

    Args:
      inner: the optimizer, fed the unscaled float32 gradients.
      initial_scale: the first loss scale (> 0; float16's largest value is 65504).
      period: finite steps in a row after which the scale is multiplied by ``factor`` (>= 1).
      factor: growth and shrink factor (> 1).
      min_scale: the scale never falls below this (> 0).
      state_dtype: the inner optimizer is initialised with its params' floating leaves cast up
        to this dtype, so that all its state (Adam's moments, say) is kept in float32 for
        float16 or bfloat16 params: the squared gradients of a float16 model underflow in
        float16. ``None`` keeps each param's dtype.
      axis_name: a mapped axis over which finiteness is decided, so that every device
        skips the same steps and keeps the same scale.

    Returns:
      A transformation whose state is :class:`DynamicLossScaleState`.

    Example:
      >>> import jax, jax.numpy as jnp, gradxform as gx
      >>> opt = gx.dynamic_loss_scale(gx.sgd(0.5), initial_scale=1024.0)
      >>> params = {"w": jnp.ones(2, jnp.float16)}
      >>> state = opt.init(params)
      >>> grads = {"w": jnp.array([1.0, 2.0], jnp.float16) * gx.current_loss_scale(state)}
      >>> updates, state = opt.update(grads, state, params)
      >>> updates["w"].tolist(), float(gx.current_loss_scale(state))
      ([-0.5, -1.0], 1024.0)
      >>> updates, state = opt.update({"w": jnp.array([jnp.inf, 0], jnp.float16)}, state, params)
      >>> updates["w"].tolist(), float(gx.current_loss_scale(state))
      ([0.0, 0.0], 512.0)
    """
    who = "dynamic_loss_scale"
    inner = _as_transformation(inner, who)
    keep_extra = _extra_args_filter(inner.update)
    if not float(initial_scale) > 0:
        raise ValueError(f"{who}: `initial_scale` must be > 0, got {initial_scale!r}")
    if not isinstance(period, int) or isinstance(period, bool) or period < 1:
        raise ValueError(f"{who}: `period` must be an int >= 1, got {period!r}")
    if not float(factor) > 1:
        raise ValueError(f"{who}: `factor` must be > 1, got {factor!r}")
    if not float(min_scale) > 0:
        raise ValueError(f"{who}: `min_scale` must be > 0, got {min_scale!r}")
    template = DynamicLossScale(
        float(initial_scale), period=period, factor=factor, min_loss_scale=min_scale
    )

    def init_fn(params):
        inner_params = params if state_dtype is None else _upcast(params, state_dtype)
        return DynamicLossScaleState(
            loss_scale=jnp.asarray(initial_scale, jnp.float32),
            good_steps=jnp.zeros([], jnp.int32),
            last_finite=jnp.array(True),
            total_notfinite=jnp.zeros([], jnp.int32),
            inner_state=inner.init(inner_params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        scaler = dataclasses.replace(
            template, loss_scale=state.loss_scale, good_steps=state.good_steps
        )
        grads = scaler.unscale(updates)
        grads_finite = all_finite(grads, axis_name)
        new_updates, new_inner = inner.update(
            grads, state.inner_state, params, **keep_extra(extra_args)
        )
        apply = grads_finite & all_finite(new_updates, axis_name)
        scaler = scaler.adjust(grads_finite)
        total = jnp.where(apply, state.total_notfinite, _tree.safe_increment(state.total_notfinite))
        return _zeros_unless(apply, new_updates), DynamicLossScaleState(
            loss_scale=scaler.loss_scale,
            good_steps=scaler.good_steps,
            last_finite=grads_finite,
            total_notfinite=total.astype(jnp.int32),
            inner_state=_keep_if(apply, new_inner, state.inner_state),
        )

    return GradientTransformation(init_fn, update_fn)


def current_loss_scale(state: Any) -> jax.Array:
    """The loss scale to multiply the next loss by: ``loss_scale`` of the one
    :class:`DynamicLossScaleState` inside ``state`` (which may be a chain's state).

    Raises:
      ValueError: when ``state`` holds no :class:`DynamicLossScaleState`, or several.
    """
    return _find_state(state, DynamicLossScaleState, "current_loss_scale").loss_scale
