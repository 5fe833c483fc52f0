"""Optax's zoom line search (:func:`scale_by_zoom_linesearch`): a step size meeting the strong
Wolfe conditions, found by growing the step until an interval brackets one, then zooming in.

Each iteration evaluates the loss and gradient once, at a point chosen by whichever phase is
running: one ``lax.while_loop`` whose body computes both phases' next point (cheap scalar
arithmetic), evaluates the loss at the one in use, and keeps that phase's bookkeeping. The
numbers are Optax's (``optax.scale_by_zoom_linesearch``), decision for decision.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _tree, _validate
from gradxform._base import GradientTransformation
from gradxform._types import StepCount
from gradxform.transforms.linesearch import (
    ScaleByZoomLinesearchState,
    ZoomLinesearchInfo,
    check_loss_call,
    loss_kwargs,
    params_at,
    real_dot,
    scaled,
    value_dtype,
)


class _Search(NamedTuple):
    """The loop state: the last point tried, the interval ``[low, high]`` (``value(low) <=
    value(high)``, not ``low <= high``), the cubic's third point, and the best point with a
    sufficient decrease (``safe_*``) to fall back on."""

    count: StepCount
    stepsize: jax.Array
    value: jax.Array
    grad: Any
    slope: jax.Array
    decrease_error: jax.Array
    curvature_error: jax.Array
    interval_found: jax.Array
    done: jax.Array
    failed: jax.Array
    low: jax.Array
    value_low: jax.Array
    slope_low: jax.Array
    high: jax.Array
    value_high: jax.Array
    slope_high: jax.Array
    cubic_ref: jax.Array
    value_cubic_ref: jax.Array
    safe_stepsize: jax.Array
    safe_value: jax.Array
    safe_grad: Any


def _cubic_min(a, fa, fpa, b, fb, c, fc):
    """The critical point of the cubic through ``(a, fa)``, ``(b, fb)``, ``(c, fc)`` with slope
    ``fpa`` at ``a``; NaN where there is none (then unused)."""
    db, dc = b - a, c - a
    denom = (db * dc) ** 2 * (db - dc)
    matrix = jnp.stack([jnp.stack([dc**2, -(db**2)]), jnp.stack([-(dc**3), db**3])])
    rhs = jnp.stack([fb - fa - fpa * db, fc - fa - fpa * dc])
    cubic, quadratic = jnp.dot(matrix, rhs, precision=jax.lax.Precision.HIGHEST) / denom
    radical = quadratic * quadratic - 3.0 * cubic * fpa
    return a + (-quadratic + jnp.sqrt(radical)) / (3.0 * cubic)


def _quad_min(a, fa, fpa, b, fb):
    """The critical point of the parabola through ``(a, fa)``, ``(b, fb)`` with slope ``fpa``
    at ``a``."""
    db = b - a
    curvature = (fb - fa - fpa * db) / (db**2)
    return a - fpa / (2.0 * curvature)


def scale_by_zoom_linesearch(
    max_linesearch_steps: int,
    max_learning_rate: float | None = None,
    tol: float = 0.0,
    increase_factor: float = 2.0,
    slope_rtol: float = 1e-4,
    curv_rtol: float = 0.9,
    approx_dec_rtol: float | None = 1e-6,
    stepsize_precision: float = 1e-5,
    initial_guess_strategy: str = "keep",
    verbose: bool = False,
) -> GradientTransformation:
    """Optax's zoom line search (Nocedal & Wright, Algorithms 3.5 and 3.6): ``u <- eta u``.

    ``eta`` satisfies, up to ``tol``, a sufficient decrease and a small curvature::

        f(w + eta u) <= f(w) + slope_rtol eta <u, grad f(w)>
        |<grad f(w + eta u), u>| <= curv_rtol |<grad f(w), u>|

    where, once ``f(w + eta u) <= f(w) + approx_dec_rtol |f(w)|``, the first may be replaced by
    Hager and Zhang's approximate decrease ``<grad f(w + eta u), u> <= (2 slope_rtol - 1)
    <grad f(w), u>``. The step grows by ``increase_factor`` from the first guess (1, or the
    last step with ``"keep"``) until an interval holds such a step, which is then narrowed by
    cubic, quadratic or bisection steps. When the interval is shorter than
    ``stepsize_precision``, or after ``max_linesearch_steps`` evaluations, the best step with
    a sufficient decrease is taken (or the last one tried, if none).

    Args:
      max_linesearch_steps: the most evaluations of the loss per update (>= 1).
      max_learning_rate: the largest ``eta``, or ``None`` for no bound.
      tol: slack of both criteria.
      increase_factor: growth of ``eta`` while searching an interval (> 1).
      slope_rtol: ``c1`` of the sufficient decrease.
      curv_rtol: ``c2`` of the curvature criterion (``inf`` switches it off).
      approx_dec_rtol: the relative closeness to ``f(w)`` under which the approximate decrease
        is accepted, or ``None`` for Armijo's only.
      stepsize_precision: the interval length below which a sufficient decrease is enough.
      initial_guess_strategy: ``"one"`` (best for quasi-Newton directions) or ``"keep"``.
      verbose: print the criteria's errors when the search fails.

    Returns:
      A transformation whose state is :class:`ScaleByZoomLinesearchState`; its ``update``
      takes ``value``, ``grad`` and ``value_fn`` (and ``value_fn``'s own keyword arguments).

    References:
      Nocedal & Wright, *Numerical Optimization*, 1999. Hager & Zhang, *Algorithm 851:
      CG_DESCENT*, 2006.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> f, w = lambda w: jnp.sum(w**2), jnp.array([1.0, 2.0])
      >>> tx, g = gx.scale_by_zoom_linesearch(15), 2 * w
      >>> tx.update(-g, tx.init(w), w, value=f(w), grad=g, value_fn=f)[0]  # -0.5 g: to the minimum
      Array([-1., -2.], dtype=float32)
    """
    who = "scale_by_zoom_linesearch"
    _validate.count(who, "max_linesearch_steps", max_linesearch_steps)
    if max_learning_rate is not None:
        _validate.positive(who, "max_learning_rate", max_learning_rate)
    _validate.non_negative(who, "tol", tol)
    _validate.at_least(who, "increase_factor", increase_factor, 1.0, strict=True)
    _validate.probability(who, "slope_rtol", slope_rtol, closed=True)
    if not (_validate.is_static_number(curv_rtol) and float(curv_rtol) == jnp.inf):
        _validate.non_negative(who, "curv_rtol", curv_rtol)
    if approx_dec_rtol is not None:
        _validate.non_negative(who, "approx_dec_rtol", approx_dec_rtol)
    _validate.non_negative(who, "stepsize_precision", stepsize_precision)
    _validate.choice(who, "initial_guess_strategy", initial_guess_strategy, ("one", "keep"))
    _validate.boolean(who, "verbose", verbose)

    def decrease_error(stepsize, value, slope, value_init, slope_init):
        error = value - value_init - slope_rtol * stepsize * slope_init
        if approx_dec_rtol is not None:
            approx = slope - (2 * slope_rtol - 1.0) * slope_init
            close = value - value_init - approx_dec_rtol * jnp.abs(value_init)
            error = jnp.minimum(jnp.maximum(approx, close), error)
        error = jnp.maximum(error, 0.0)
        return jnp.where(jnp.isnan(error), jnp.inf, error)

    def curvature_error(slope, slope_init):
        error = jnp.maximum(jnp.abs(slope) - curv_rtol * jnp.abs(slope_init), 0.0)
        return jnp.where(jnp.isnan(error), jnp.inf, error)

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        dtype = value_dtype(params)
        inf = jnp.full([], jnp.inf, dtype)
        return ScaleByZoomLinesearchState(
            learning_rate=jnp.ones([], dtype),
            value=inf,
            grad=_tree.tree_zeros_like(params),
            info=ZoomLinesearchInfo(jnp.zeros([], jnp.int32), inf, inf),
            count=jnp.zeros([], jnp.int32),
        )

    def update_fn(
        updates, state, params=None, *, value=None, grad=None, value_fn=None, **extra_args
    ):
        state_type = ScaleByZoomLinesearchState
        check_loss_call(who, updates, state, state_type, params, value, grad, value_fn)
        fn_kwargs = loss_kwargs(who, value_fn, extra_args)
        dtype = state.learning_rate.dtype
        value_and_grad: Callable = jax.value_and_grad(value_fn)
        value_init = jnp.asarray(value).astype(dtype)
        slope_init = real_dot(updates, grad).astype(dtype)
        guess = jnp.ones([], dtype) if initial_guess_strategy == "one" else state.learning_rate

        def step(s: _Search) -> _Search:
            # The interval search's next point: the guess, then growing.
            grown = jnp.where(s.count == 0, guess, increase_factor * s.stepsize)
            at_max = jnp.asarray(False)
            if max_learning_rate is not None:
                at_max = grown >= max_learning_rate
                grown = jnp.minimum(grown, max_learning_rate)
            # The zoom's next point: cubic, else quadratic, else bisection, kept well inside.
            delta = jnp.abs(s.high - s.low)
            left, right = jnp.minimum(s.high, s.low), jnp.maximum(s.high, s.low)
            cubic = _cubic_min(s.low, s.value_low, s.slope_low, s.high, s.value_high,
                               s.cubic_ref, s.value_cubic_ref)  # fmt: skip
            use_cubic = (cubic > left + 0.2 * delta) & (cubic < right - 0.2 * delta)
            quad = _quad_min(s.low, s.value_low, s.slope_low, s.high, s.value_high)
            use_quad = ~use_cubic & (quad > left + 0.1 * delta) & (quad < right - 0.1 * delta)
            middle = jnp.where(use_cubic, cubic, s.cubic_ref)
            middle = jnp.where(use_quad, quad, middle)
            middle = jnp.where(~use_cubic & ~use_quad, (s.low + s.high) / 2.0, middle)

            zooming = s.interval_found
            t = jnp.where(zooming, middle, grown).astype(dtype)
            new_value, new_grad = value_and_grad(params_at(params, t, updates), **fn_kwargs)
            new_value = jnp.asarray(new_value).astype(dtype)
            new_grad = jax.tree.map(lambda g, p: g.astype(p.dtype), new_grad, grad)
            slope = real_dot(_conj(new_grad), updates).astype(dtype)
            dec = decrease_error(t, new_value, slope, value_init, slope_init)
            curv = curvature_error(slope, slope_init)
            good = jnp.maximum(dec, curv) <= tol
            sufficient = dec <= tol
            last = s.count + 1 >= max_linesearch_steps

            # Interval search (Algorithm 3.5): a rise or a failed decrease closes the interval
            # at the new point; an upward slope closes it with the new point as low.
            high_new = (dec > 0.0) | ((new_value >= s.value) & (s.count > 0))
            low_new = (slope >= 0.0) & ~high_new
            found = high_new | low_new | good
            prev = (s.stepsize, s.value, s.slope)
            new = (t, new_value, slope)
            search_low = [jnp.where(low_new, a, b) for a, b in zip(new, prev, strict=True)]
            search_high = [jnp.where(low_new, a, b) for a, b in zip(prev, new, strict=True)]
            search_done = good | (at_max & ~found)
            search_safe = sufficient

            # Zoom (Algorithm 3.6).
            to_high = (dec > 0.0) | (new_value >= s.value_low)
            low_to_high = (slope * (s.high - s.low) >= 0.0) & ~to_high
            old_low = (s.low, s.value_low, s.slope_low)
            old_high = (s.high, s.value_high, s.slope_high)
            zoom_high = [
                jnp.where(low_to_high, lo, jnp.where(to_high, n, hi))
                for lo, n, hi in zip(old_low, new, old_high, strict=True)
            ]
            zoom_low = [jnp.where(~to_high, n, lo) for n, lo in zip(new, old_low, strict=True)]
            moved_high = to_high | low_to_high
            zoom_ref = [jnp.where(moved_high, old_high[i], old_low[i]) for i in range(2)]
            zoom_safe = sufficient & (new_value < s.safe_value)
            too_small = delta <= stepsize_precision

            def pick(zoom_value, search_value):
                return jnp.where(zooming, zoom_value, search_value)

            low = [pick(z, a) for z, a in zip(zoom_low, search_low, strict=True)]
            high = [pick(z, a) for z, a in zip(zoom_high, search_high, strict=True)]
            ref = [pick(z, a) for z, a in zip(zoom_ref, search_low[:2], strict=True)]
            take_safe = pick(zoom_safe, search_safe)
            safe_stepsize = jnp.where(take_safe, t, s.safe_stepsize)
            safe_value = jnp.where(take_safe, new_value, s.safe_value)
            safe_grad = _tree.tree_where(take_safe, new_grad, s.safe_grad)
            done = pick(good, search_done)
            failed = pick(last | (too_small & (safe_stepsize > 0.0)), last) & ~done
            # A failed search falls back on the best sufficient decrease (or, when even the
            # decrease error is infinite, on the start), else keeps the last point tried.
            fall_back = failed & ((safe_stepsize > 0.0) | jnp.isinf(dec))
            return _Search(
                count=_tree.safe_increment(s.count),
                stepsize=jnp.where(fall_back, safe_stepsize, t),
                value=jnp.where(fall_back, safe_value, new_value),
                grad=_tree.tree_where(fall_back, safe_grad, new_grad),
                slope=slope,
                decrease_error=dec,
                curvature_error=curv,
                interval_found=pick(s.interval_found, found),
                done=done,
                failed=failed,
                low=low[0], value_low=low[1], slope_low=low[2],
                high=high[0], value_high=high[1], slope_high=high[2],
                cubic_ref=ref[0], value_cubic_ref=ref[1],
                safe_stepsize=safe_stepsize, safe_value=safe_value, safe_grad=safe_grad,
            )  # fmt: skip

        zero, inf, false = jnp.zeros([], dtype), jnp.full([], jnp.inf, dtype), jnp.asarray(False)
        start = _Search(
            count=jnp.zeros([], jnp.int32),
            stepsize=zero, value=value_init, grad=grad, slope=slope_init,
            decrease_error=inf, curvature_error=inf,
            interval_found=false, done=false, failed=false,
            low=zero, value_low=value_init, slope_low=slope_init,
            high=zero, value_high=value_init, slope_high=slope_init,
            cubic_ref=zero, value_cubic_ref=value_init,
            safe_stepsize=zero, safe_value=value_init, safe_grad=grad,
        )  # fmt: skip
        end = jax.lax.while_loop(lambda s: ~(s.done | s.failed), step, start)
        if verbose:
            jax.lax.cond(
                end.failed,
                lambda: jax.debug.print(
                    "scale_by_zoom_linesearch: no step met both criteria (value {v}, slope {s}, "
                    "decrease error {d}, curvature error {c}); step {t}",
                    v=value_init, s=slope_init, d=end.decrease_error,
                    c=end.curvature_error, t=end.stepsize,
                ),
                lambda: None,
            )  # fmt: skip
        info = ZoomLinesearchInfo(end.count, end.decrease_error, end.curvature_error)
        count = _tree.safe_increment(state.count)
        new_state = ScaleByZoomLinesearchState(end.stepsize, end.value, end.grad, info, count)
        return scaled(end.stepsize, updates), new_state

    return GradientTransformation(init_fn, update_fn)


def _conj(tree: Any) -> Any:
    return jax.tree.map(jnp.conj, tree)
