"""Dynamic loss scaling for float16 training.

:class:`DynamicLossScale` is the loss-scaling arithmetic of mixed-precision training, for loops
that manage it themselves; :func:`dynamic_loss_scale` wraps an optimizer so that it takes
gradients of a scaled loss, skips the steps that overflow and keeps the scale in its state.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _tree, _validate
from gradxform._base import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    as_transformation,
    expect_state,
    extra_args_filter,
    find_state,
)
from gradxform._types import Params
from gradxform.wrappers.guards import all_finite, keep_if, zeros_unless


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
    _: dataclasses.KW_ONLY
    good_steps: jax.Array = None  # type: ignore[assignment]  # filled in by __post_init__
    period: int = 2000
    factor: float = 2.0
    min_loss_scale: float = 1.0

    def __post_init__(self) -> None:
        who = "DynamicLossScale"
        # Numbers become arrays; anything else (arrays, tracers, or the placeholders JAX puts
        # in a pytree while transforming it) is left alone.
        if isinstance(self.loss_scale, int | float):
            _validate.positive(who, "loss_scale", self.loss_scale)
            object.__setattr__(self, "loss_scale", jnp.asarray(self.loss_scale, jnp.float32))
        if self.good_steps is None or isinstance(self.good_steps, int):
            object.__setattr__(self, "good_steps", jnp.asarray(self.good_steps or 0, jnp.int32))
        _validate.count(who, "period", self.period)
        _validate.at_least(who, "factor", self.factor, 1, strict=True)
        _validate.positive(who, "min_loss_scale", self.min_loss_scale)

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

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> state = gx.dynamic_loss_scale(gx.sgd(0.5), initial_scale=1024.0).init(jnp.ones(2))
      >>> type(state).__name__, float(state.loss_scale), int(state.good_steps)
      ('DynamicLossScaleState', 1024.0, 0)
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
    *,
    initial_scale: float = 2.0**15,
    period: int = 2000,
    factor: float = 2.0,
    min_scale: float = 1.0,
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
    inner = as_transformation(inner, who)
    keep_extra = extra_args_filter(inner.update)
    _validate.positive(who, "initial_scale", initial_scale)
    _validate.count(who, "period", period)
    _validate.at_least(who, "factor", factor, 1, strict=True)
    _validate.positive(who, "min_scale", min_scale)
    _validate.dtype(who, "state_dtype", state_dtype)
    _validate.axis_name(who, axis_name)
    template = DynamicLossScale(
        jnp.asarray(float(initial_scale), jnp.float32),
        period=period,
        factor=factor,
        min_loss_scale=min_scale,
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
        expect_state(who, state, DynamicLossScaleState)
        # Unscaling computes in float32, which would hide integer or boolean gradients.
        _tree.check_inexact_leaves(updates, who, "update")
        scaler = dataclasses.replace(
            template, loss_scale=state.loss_scale, good_steps=state.good_steps
        )
        grads = scaler.unscale(updates)
        grads_finite = all_finite(grads, axis_name=axis_name)
        new_updates, new_inner = inner.update(
            grads, state.inner_state, params, **keep_extra(extra_args)
        )
        apply = grads_finite & all_finite(new_updates, axis_name=axis_name)
        scaler = scaler.adjust(grads_finite)
        total = jnp.where(apply, state.total_notfinite, _tree.safe_increment(state.total_notfinite))
        return zeros_unless(apply, new_updates), DynamicLossScaleState(
            loss_scale=scaler.loss_scale,
            good_steps=scaler.good_steps,
            last_finite=grads_finite,
            total_notfinite=total.astype(jnp.int32),
            inner_state=keep_if(apply, new_inner, state.inner_state),
        )

    return GradientTransformationExtraArgs(init_fn, update_fn)


def current_loss_scale(state: Any) -> jax.Array:
    """The loss scale to multiply the next loss by: ``loss_scale`` of the one
    :class:`DynamicLossScaleState` inside ``state`` (which may be a chain's state).

    Raises:
      ValueError: when ``state`` holds no :class:`DynamicLossScaleState`, or several.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt = gx.chain(gx.clip(1.0), gx.dynamic_loss_scale(gx.sgd(0.5), initial_scale=8.0))
      >>> float(gx.current_loss_scale(opt.init(jnp.ones(2))))  # found in the chain
      8.0
    """
    return find_state(state, DynamicLossScaleState, "current_loss_scale").loss_scale
