"""Averages of the parameters along the optimization path, and Lookahead.

:func:`ema_params` and :func:`swa_params` keep a moving average of the parameters (for
evaluation) in the optimizer state, read back with :func:`averaged_params`.
:func:`lookahead` keeps slow weights that follow the fast optimizer's weights and, every few
steps, pulls the parameters back onto them; read them with :func:`lookahead_slow_params`.

These transformations need ``params`` in ``update``: they compute the new parameters
``params + updates`` themselves.
"""

from __future__ import annotations

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
    require_params,
)
from gradxform._types import StepCount

_NEEDS_PARAMS = "it computes the new params `params + updates` itself"


class ParamsAverageState(NamedTuple):
    """``count``: updates seen (int32); ``average``: the averaged params, one leaf per param.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> state = gx.ema_params(0.9).init({"w": jnp.ones(2)})
      >>> type(state).__name__, int(state.count), state.average["w"].tolist()
      ('ParamsAverageState', 0, [1.0, 1.0])
    """

    count: StepCount
    average: Any


class LookaheadState(NamedTuple):
    """``count``: updates made (int32); ``slow``: the slow weights (``()`` when the params are
    a :class:`LookaheadParams` pair, which holds them); ``inner_state``: the fast optimizer's
    state (also readable as ``fast_state``, Optax's name).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> state = gx.lookahead(gx.sgd(0.1), sync_period=2, slow_step_size=0.5).init(jnp.ones(1))
      >>> type(state).__name__, int(state.count), state.slow.tolist()
      ('LookaheadState', 0, [1.0])
    """

    count: StepCount
    slow: Any
    inner_state: Any

    @property
    def fast_state(self) -> Any:
        """``inner_state``, under Optax's name."""
        return self.inner_state


class LookaheadParams(NamedTuple):
    """Optax's form of Lookahead's params: the ``fast`` weights and the ``slow`` ones.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> gx.LookaheadParams.init_synced({"w": jnp.ones(1)})
      LookaheadParams(fast={'w': Array([1.], dtype=float32)},
                      slow={'w': Array([1.], dtype=float32)})
    """

    fast: Any
    slow: Any

    @classmethod
    def init_synced(cls, params: Any) -> LookaheadParams:
        """The pair at the start: both weights equal to ``params``."""
        return cls(fast=params, slow=params)


def _new_param(p: jax.Array, u: jax.Array) -> jax.Array:
    """``p + u`` in ``p``'s dtype, as :func:`gradxform.apply_updates` computes it.

    Fused into a larger computation, XLA may round it differently (e.g. contract it into a
    fused multiply-add with the learning rate), by about one ulp.
    """
    return jnp.asarray(p + u).astype(jnp.result_type(p))


def _copy(tree: Any, dtype: Any | None) -> Any:
    """A copy in ``dtype`` (or each leaf's own) that never aliases ``tree``'s buffers."""
    return jax.tree.map(lambda x: jnp.array(x, dtype=dtype or jnp.result_type(x), copy=True), tree)


def _params_average(who: str, weight_fn, start_step: int, accumulator_dtype: Any | None):
    """The transformation behind :func:`ema_params` and :func:`swa_params`.

    ``weight_fn(n)`` is the weight of the new params in the average when they are the
    ``n``-th averaged ones, for ``n >= 2`` (the first averaged params are copied).
    """
    _validate.count(who, "start_step", start_step, minimum=0)
    _validate.dtype(who, "accumulator_dtype", accumulator_dtype)

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        return ParamsAverageState(
            count=jnp.zeros([], jnp.int32), average=_copy(params, accumulator_dtype)
        )

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        expect_state(who, state, ParamsAverageState)
        require_params(who, params, _NEEDS_PARAMS)
        _checks.check_updates(who, updates, params, "param")
        count = _tree.safe_increment(state.count)
        n = count - start_step  # how many new params the average holds, this one included
        copy = n <= 1
        weight = weight_fn(jnp.maximum(n, 2).astype(_tree.default_float_dtype()))

        def leaf(p, u, a):
            q = _new_param(p, u)
            dtype = _tree.compute_dtype(q.dtype, a.dtype)
            a32 = a.astype(dtype)
            blended = a32 + _tree.cast_scalar(weight, dtype) * (q.astype(dtype) - a32)
            return jnp.where(copy, q.astype(dtype), blended).astype(a.dtype)

        average = jax.tree.map(leaf, params, updates, state.average)
        return updates, ParamsAverageState(count=count, average=average)

    return GradientTransformation(init_fn, update_fn)


def ema_params(
    decay: float, *, start_step: int = 0, accumulator_dtype: Any | None = None
) -> GradientTransformation:
    """Keeps an exponential moving average of the parameters, for evaluation.

    With ``q_t = p_{t-1} + u_t`` the params after the ``t``-th update (``u_t`` the updates
    this transformation receives, so place it last in the chain, after the learning rate)
    and ``s = start_step``::

        a_t = q_t                                    for t <= s + 1
        a_t = decay * a_{t-1} + (1 - decay) * q_t    for t > s + 1

    The average starts as a copy of the first averaged params (as
    ``torch.optim.swa_utils.AveragedModel`` with an EMA ``multi_avg_fn``), so it needs no
    bias correction. Updates pass through unchanged. Read the average with
    :func:`averaged_params`.

    Args:
      decay: the weight of the past, in [0, 1] (e.g. 0.999).
      start_step: the number of updates to skip; until then the average follows the params.
      accumulator_dtype: dtype of the average; by default each param's dtype (pass
        ``jnp.float32`` for bfloat16 params: with decay 0.999 a bfloat16 average stalls).

    Returns:
      A transformation whose state is :class:`ParamsAverageState`. Needs ``params``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt = gx.chain(gx.sgd(1.0), gx.ema_params(0.5))
      >>> params = {"w": jnp.zeros(1)}
      >>> state = opt.init(params)
      >>> for g in (-1.0, -1.0, -1.0):  # params become 1, 2, 3
      ...     updates, state = opt.update({"w": jnp.array([g])}, state, params)
      ...     params = gx.apply_updates(params, updates)
      >>> gx.averaged_params(state)["w"].tolist()  # 0.5 * (0.5 * 1 + 0.5 * 2) + 0.5 * 3
      [2.25]
    """
    who = "ema_params"
    _validate.probability(who, "decay", decay, closed=True)
    return _params_average(who, lambda n: 1 - decay, start_step, accumulator_dtype)


def swa_params(*, start_step: int = 0, accumulator_dtype: Any | None = None):
    """Keeps the uniform running average of the parameters: stochastic weight averaging.

    With ``q_t = p_{t-1} + u_t`` the params after the ``t``-th update (place it last in the
    chain) and ``s = start_step``::

        a_t = q_t                                        for t <= s + 1
        a_t = a_{t-1} + (q_t - a_{t-1}) / (t - s)        = mean(q_{s+1}, ..., q_t)

    This is ``torch.optim.swa_utils.AveragedModel`` (default average) with
    ``update_parameters`` called after every optimizer step past the first ``s``. Updates
    pass through unchanged. Read the average with :func:`averaged_params`.

    Args:
      start_step: the number of updates to leave out of the average (SWA's burn-in); until
        then the average follows the params.
      accumulator_dtype: dtype of the average; by default each param's dtype.

    Returns:
      A transformation whose state is :class:`ParamsAverageState`. Needs ``params``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt = gx.chain(gx.sgd(1.0), gx.swa_params(start_step=1))
      >>> params = {"w": jnp.zeros(1)}
      >>> state = opt.init(params)
      >>> for g in (-1.0, -1.0, -1.0, -1.0):  # params become 1, 2, 3, 4
      ...     updates, state = opt.update({"w": jnp.array([g])}, state, params)
      ...     params = gx.apply_updates(params, updates)
      >>> gx.averaged_params(state)["w"].tolist()  # mean(2, 3, 4)
      [3.0]
    """
    return _params_average("swa_params", lambda n: 1 / n, start_step, accumulator_dtype)


def averaged_params(state: Any) -> Any:
    """The averaged params kept by :func:`ema_params` or :func:`swa_params`.

    Args:
      state: the optimizer state holding exactly one :class:`ParamsAverageState` (a chain's
        state, a wrapper's state, or that state itself).

    Returns:
      The average, a tree with the params' structure (leaves a wrapper did not show it are
      :class:`gradxform.MaskedNode`).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt, params = gx.chain(gx.sgd(1.0), gx.ema_params(0.5)), {"w": jnp.zeros(1)}
      >>> _, state = opt.update({"w": jnp.array([-2.0])}, opt.init(params), params)
      >>> gx.averaged_params(state)["w"].tolist()  # the params after the step: 0 + 2
      [2.0]
    """
    return find_state(state, ParamsAverageState, "averaged_params").average


def lookahead(
    fast_optimizer: GradientTransformation,
    sync_period: int = 5,
    slow_step_size: float = 0.5,
    reset_state: bool = False,
    *,
    accumulator_dtype: Any | None = None,
) -> GradientTransformation:
    """Lookahead (Zhang et al., 2019): slow weights that follow the fast optimizer's weights.

    The params are the fast weights ``theta``; the slow weights ``phi`` live in the state.
    With ``k = sync_period``, ``alpha = slow_step_size`` and ``u_t`` the fast optimizer's
    update at step ``t``::

        phi_0 = theta_0
        theta'_t = theta_{t-1} + u_t
        if t % k == 0:   phi_t = phi_{t-1} + alpha * (theta'_t - phi_{t-1});   theta_t = phi_t
        else:            phi_t = phi_{t-1};                                    theta_t = theta'_t

    The returned update is ``u_t``, or on a synchronisation step ``phi_t - theta_{t-1}``,
    which moves the params onto the slow weights (up to the rounding of
    ``theta + (phi - theta)``). Keeping the params a plain tree (Optax instead makes them a
    ``(fast, slow)`` pair) lets Lookahead wrap any optimizer in any training loop and
    checkpoint. The fast optimizer's state carries on across synchronisations, as in the
    paper. Evaluate on :func:`lookahead_slow_params` (equal to the params right after a
    synchronisation).

    Memory: the fast optimizer's state, one copy of the params and an int32 counter.

    Optax's form is reachable too: give ``init`` and ``update`` a :class:`LookaheadParams`
    pair (``LookaheadParams.init_synced(params)``); the slow weights then live in the params,
    the fast optimizer sees ``params.fast``, and ``update`` returns a pair of updates with
    Optax's numbers (``d = fast + u - slow``, ``s = sync``)::

        (fast, slow) updates = (u - s * (1 - alpha) * d,   s * alpha * d)

    With ``reset_state`` the fast optimizer's state restarts from ``init`` of the params the
    step started from (``params.fast`` in the pair form) at every synchronisation, as Optax's.

    Args:
      fast_optimizer: the inner optimizer, e.g. ``gradxform.adam(1e-3)``.
      sync_period: ``k``, the number of fast steps between synchronisations (>= 1).
      slow_step_size: ``alpha``, in [0, 1] (1 makes the slow weights the fast ones).
      reset_state: restart the fast optimizer's state at each synchronisation.
      accumulator_dtype: dtype of the slow weights; by default each param's dtype (unused in
        the pair form).

    Returns:
      A transformation whose state is :class:`LookaheadState`. Needs ``params``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt = gx.lookahead(gx.sgd(1.0), sync_period=2, slow_step_size=0.5)
      >>> params = {"w": jnp.zeros(1)}
      >>> state = opt.init(params)
      >>> for g in (-1.0, -1.0):  # the fast weights go to 1, then 2; the slow ones to 1
      ...     updates, state = opt.update({"w": jnp.array([g])}, state, params)
      ...     params = gx.apply_updates(params, updates)
      >>> params["w"].tolist(), gx.lookahead_slow_params(state)["w"].tolist()
      ([1.0], [1.0])
    """
    who = "lookahead"
    fast_optimizer = as_transformation(fast_optimizer, who)
    keep_extra = extra_args_filter(fast_optimizer.update)
    _validate.count(who, "sync_period", sync_period)
    _validate.dtype(who, "accumulator_dtype", accumulator_dtype)
    _validate.probability(who, "slow_step_size", slow_step_size, closed=True)
    _validate.boolean(who, "reset_state", reset_state)

    def maybe_reset(sync, inner_state, fast_params):
        if not reset_state:
            return inner_state
        fresh = fast_optimizer.init(fast_params)
        return jax.tree.map(lambda new, old: jnp.where(sync, new, old), fresh, inner_state)

    def init_fn(params):
        if isinstance(params, LookaheadParams):
            _tree.check_inexact_leaves(params.fast, who)
            return LookaheadState(
                count=jnp.zeros([], jnp.int32),
                slow=(),
                inner_state=fast_optimizer.init(params.fast),
            )
        _tree.check_inexact_leaves(params, who)
        return LookaheadState(
            count=jnp.zeros([], jnp.int32),
            slow=_copy(params, accumulator_dtype),
            inner_state=fast_optimizer.init(params),
        )

    def pair_update(updates, state, params, extra_args):
        _checks.check_updates(who, updates, params.fast, "fast param")
        fast_updates, inner_state = fast_optimizer.update(
            updates, state.inner_state, params.fast, **keep_extra(extra_args)
        )
        count = _tree.safe_increment(state.count)
        sync = count % sync_period == 0

        def leaf(f, u, s):
            dtype = _tree.compute_dtype(f.dtype, u.dtype, s.dtype)
            on = jnp.where(sync, 1, 0).astype(dtype)
            alpha = _tree.cast_scalar(slow_step_size, dtype)
            diff = f.astype(dtype) + u.astype(dtype) - s.astype(dtype)
            fast = u.astype(dtype) - on * (1 - alpha) * diff
            return fast.astype(u.dtype), (alpha * on * diff).astype(s.dtype)

        fast, slow = _tree.tree_map_multi(leaf, 2, params.fast, fast_updates, params.slow)
        inner_state = maybe_reset(sync, inner_state, params.fast)
        return LookaheadParams(fast, slow), LookaheadState(count, (), inner_state)

    def update_fn(updates, state, params=None, **extra_args):
        expect_state(who, state, LookaheadState)
        require_params(who, params, _NEEDS_PARAMS)
        if isinstance(params, LookaheadParams):
            return pair_update(updates, state, params, extra_args)
        _checks.check_updates(who, updates, params, "param")
        fast_updates, inner_state = fast_optimizer.update(
            updates, state.inner_state, params, **keep_extra(extra_args)
        )
        _checks.check_updates(f"{who} (the fast optimizer's output)", fast_updates, params, "param")
        count = _tree.safe_increment(state.count)
        sync = count % sync_period == 0

        def leaf(p, u, s):
            dtype = _tree.compute_dtype(p.dtype, u.dtype, s.dtype)
            fast = _new_param(p, u).astype(dtype)
            s32 = s.astype(dtype)
            new_slow = s32 + _tree.cast_scalar(slow_step_size, dtype) * (fast - s32)
            to_slow = new_slow - p.astype(dtype)
            return (
                jnp.where(sync, to_slow.astype(u.dtype), u),
                jnp.where(sync, new_slow.astype(s.dtype), s),
            )

        out, slow = _tree.tree_map_multi(leaf, 2, params, fast_updates, state.slow)
        inner_state = maybe_reset(sync, inner_state, params)
        return out, LookaheadState(count=count, slow=slow, inner_state=inner_state)

    return GradientTransformationExtraArgs(init_fn, update_fn)


def lookahead_slow_params(state: Any) -> Any:
    """The slow weights of :func:`lookahead`, the ones to evaluate.

    Args:
      state: the optimizer state holding exactly one :class:`LookaheadState`.

    Returns:
      The slow weights, a tree with the params' structure.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt = gx.lookahead(gx.sgd(1.0), sync_period=1, slow_step_size=0.5)
      >>> params = {"w": jnp.zeros(1)}
      >>> _, state = opt.update({"w": jnp.array([-2.0])}, opt.init(params), params)
      >>> gx.lookahead_slow_params(state)["w"].tolist()  # 0 + 0.5 * (2 - 0)
      [1.0]
    """
    return find_state(state, LookaheadState, "lookahead_slow_params").slow
