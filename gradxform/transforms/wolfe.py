"""torch's strong-Wolfe line search (``torch.optim.lbfgs._strong_wolfe``), on flat vectors.

:func:`strong_wolfe` finds a step ``t`` along a direction ``d`` from ``x`` where

    f(x + t d) <= f(x) + c1 t g.d          (sufficient decrease)
    |g(x + t d).d| <= -c2 g.d               (small curvature)

in two phases, as torch (after minFunc's ``lswolfe``) does: it first grows ``t`` by cubic
interpolation, bounded to ``[t + 0.01 (t - t_prev), 10 t]``, until an interval brackets such a
step, then zooms into the interval by cubic interpolation, kept at least a tenth of the
interval away from its ends. Every branch, bound and comparison is torch's, in torch's order,
so that given the same numbers it takes the same decisions; Python's ``min``/``max`` (which
keep the first argument on ties and NaN) are written as selections for the same reason. Both
phases are ``lax.while_loop`` s, and the objective is traced once in each.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

# The objective along the line: ``t -> (f(x + t d), grad f(x + t d))``, the gradient flat.
LineObjective = Callable[[jax.Array], tuple[jax.Array, jax.Array]]


def _max(a: Any, b: Any) -> jax.Array:
    """Python's ``max(a, b)``: ``b`` only if ``b > a``."""
    return jnp.where(b > a, b, a)


def _min(a: Any, b: Any) -> jax.Array:
    """Python's ``min(a, b)``: ``b`` only if ``b < a``."""
    return jnp.where(b < a, b, a)


def cubic_interpolate(x1, f1, g1, x2, f2, g2, bounds=None) -> jax.Array:
    """The minimiser of the cubic through ``(x1, f1)``, ``(x2, f2)`` with slopes ``g1``, ``g2``.

    ::

        d1 = g1 + g2 - 3 (f1 - f2) / (x1 - x2),   d2 = sqrt(d1^2 - g1 g2)
        t  = x2 - (x2 - x1) (g2 + d2 - d1) / (g2 - g1 + 2 d2)      (x1 <= x2; mirrored else)

    clipped to ``bounds`` (by default the two points), or the bounds' midpoint when
    ``d1^2 < g1 g2`` (no real minimiser).
    """
    if bounds is None:
        ordered = x1 <= x2
        low, high = jnp.where(ordered, x1, x2), jnp.where(ordered, x2, x1)
    else:
        low, high = bounds
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1**2 - g1 * g2
    real = d2_square >= 0
    d2 = jnp.sqrt(jnp.where(real, d2_square, 0))  # the other branch is taken where it is < 0
    forward = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
    backward = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
    min_pos = jnp.where(x1 <= x2, forward, backward)
    return jnp.where(real, _min(_max(min_pos, low), high), (low + high) / 2.0)


class _Bracketing(NamedTuple):
    """The first phase's loop state: the trial ``t``, the previous point, and the bracket
    (``b_*``, two points) it ends with."""

    t: jax.Array
    t_prev: jax.Array
    f_prev: jax.Array
    g_prev: jax.Array
    gtd_prev: jax.Array
    ls_iter: jax.Array
    evals: jax.Array
    stop: jax.Array
    done: jax.Array
    b_t: jax.Array
    b_f: jax.Array
    b_g: jax.Array
    b_gtd: jax.Array


class _Zooming(NamedTuple):
    """The second phase's loop state: the bracket and which of its two points is lower."""

    b_t: jax.Array
    b_f: jax.Array
    b_g: jax.Array
    b_gtd: jax.Array
    low: jax.Array
    insufficient: jax.Array
    done: jax.Array
    ls_iter: jax.Array
    evals: jax.Array


def _pair(low_first: jax.Array, low: jax.Array, high: jax.Array) -> jax.Array:
    """``[low, high]`` if ``low_first`` else ``[high, low]``, stacked on a new first axis."""
    return jnp.stack([jnp.where(low_first, low, high), jnp.where(low_first, high, low)])


def strong_wolfe(
    obj: LineObjective,
    t: jax.Array,
    d: jax.Array,
    f: jax.Array,
    g: jax.Array,
    gtd: jax.Array,
    max_ls: Any,
    *,
    c1: float = 1e-4,
    c2: float = 0.9,
    tolerance_change: float = 1e-9,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """torch's ``_strong_wolfe``: a step along ``d`` meeting the strong Wolfe conditions.

    Args:
      obj: ``t -> (f(x + t d), flat gradient there)``.
      t: the first trial step.
      d: the direction (flat).
      f, g, gtd: the value, flat gradient and slope ``g.d`` at ``t = 0``.
      max_ls: the most evaluations after the first (torch's ``max_ls``; L-BFGS passes the
        evaluations its step has left).
      c1, c2: the sufficient-decrease and curvature constants.
      tolerance_change: the zoom stops once the bracket times ``max |d|`` is below it.

    Returns:
      ``(f_new, g_new, t, evals)``: the value and gradient at the step taken, the step, and
      the number of evaluations made (int32).
    """
    dtype = d.dtype
    d_norm = jnp.max(jnp.abs(d), initial=0)
    zero = jnp.zeros([], dtype)

    def too_high(t_new, f_new):
        """Not a sufficient decrease: ``f_new > f + c1 t g.d``, in torch's order (a NaN value is
        not "too high", as in torch)."""
        return f_new > f + c1 * t_new * gtd

    def bracket_step(s: _Bracketing) -> _Bracketing:
        f_new, g_new = obj(s.t)
        gtd_new = g_new @ d
        evals = s.evals + 1
        exhausted = s.ls_iter >= max_ls
        above = too_high(s.t, f_new) | ((s.ls_iter > 1) & (f_new >= s.f_prev))
        curvature = jnp.abs(gtd_new) <= -c2 * gtd
        stop = exhausted | above | curvature | (gtd_new >= 0)
        single = ~exhausted & ~above & curvature  # the bracket is the point itself: done
        # The bracket's first point: (0, f, g) when the evaluations ran out, the new point for
        # a single-point bracket, else the previous point; its second is the new point.
        b_t = jnp.stack([jnp.where(exhausted, zero, jnp.where(single, s.t, s.t_prev)), s.t])
        b_f = jnp.stack([jnp.where(exhausted, f, jnp.where(single, f_new, s.f_prev)), f_new])
        b_g0 = jnp.where(exhausted, g, jnp.where(single, g_new, s.g_prev))
        b_gtd0 = jnp.where(exhausted, gtd, jnp.where(single, gtd_new, s.gtd_prev))
        # The next trial, by cubic interpolation within [t + 0.01 (t - t_prev), 10 t].
        t_next = cubic_interpolate(
            s.t_prev,
            s.f_prev,
            s.gtd_prev,
            s.t,
            f_new,
            gtd_new,
            bounds=(s.t + 0.01 * (s.t - s.t_prev), s.t * 10),
        )
        keep = stop  # on stopping, the trial and previous point stay as they are
        return _Bracketing(
            t=jnp.where(keep, s.t, t_next),
            t_prev=jnp.where(keep, s.t_prev, s.t),
            f_prev=jnp.where(keep, s.f_prev, f_new),
            g_prev=jnp.where(keep, s.g_prev, g_new),
            gtd_prev=jnp.where(keep, s.gtd_prev, gtd_new),
            ls_iter=jnp.where(keep, s.ls_iter, s.ls_iter + 1),
            evals=evals,
            stop=stop,
            done=single,
            b_t=b_t,
            b_f=b_f,
            b_g=jnp.stack([b_g0, g_new]),
            b_gtd=jnp.stack([b_gtd0, gtd_new]),
        )

    int32 = jnp.int32
    start = _Bracketing(
        t=jnp.asarray(t, dtype),
        t_prev=zero,
        f_prev=f,
        g_prev=g,
        gtd_prev=gtd,
        ls_iter=jnp.zeros([], int32),
        evals=jnp.zeros([], int32),
        stop=jnp.asarray(False),
        done=jnp.asarray(False),
        b_t=jnp.zeros([2], dtype),
        b_f=jnp.zeros([2], dtype),
        b_g=jnp.zeros((2, *g.shape), dtype),
        b_gtd=jnp.zeros([2], dtype),
    )
    s = jax.lax.while_loop(lambda s: ~s.stop, bracket_step, start)

    def zoom_continues(z: _Zooming) -> jax.Array:
        wide = ~(jnp.abs(z.b_t[1] - z.b_t[0]) * d_norm < tolerance_change)
        return ~z.done & (z.ls_iter < max_ls) & wide

    def zoom_step(z: _Zooming) -> _Zooming:
        t = cubic_interpolate(z.b_t[0], z.b_f[0], z.b_gtd[0], z.b_t[1], z.b_f[1], z.b_gtd[1])
        top, bottom = _max(z.b_t[0], z.b_t[1]), _min(z.b_t[0], z.b_t[1])
        eps = 0.1 * (top - bottom)
        near_end = _min(top - t, t - bottom) < eps
        # Close to an end twice in a row, or outside: move to a tenth of the bracket inside.
        move = near_end & (z.insufficient | (t >= top) | (t <= bottom))
        moved = jnp.where(jnp.abs(t - top) < jnp.abs(t - bottom), top - eps, bottom + eps)
        t = jnp.where(move, moved, t)
        f_new, g_new = obj(t)
        gtd_new = g_new @ d
        low = z.low
        high = 1 - low
        b_t, b_f, b_g, b_gtd = z.b_t, z.b_f, z.b_g, z.b_gtd
        to_high = too_high(t, f_new) | (f_new >= b_f[low])
        done = ~to_high & (jnp.abs(gtd_new) <= -c2 * gtd)
        # Neither: if the slope points away from the high end, the old low becomes the high.
        low_to_high = ~to_high & ~done & (gtd_new * (b_t[high] - b_t[low]) >= 0)

        def place(values, new):
            """The bracket after this step: the new point at ``high`` or ``low``."""
            at_high = jnp.where(to_high, new, jnp.where(low_to_high, values[low], values[high]))
            at_low = jnp.where(to_high, values[low], new)
            return _pair(low == 0, at_low, at_high)

        b_t, b_f = place(b_t, t), place(b_f, f_new)
        b_g, b_gtd = place(b_g, g_new), place(b_gtd, gtd_new)
        new_low = jnp.where(to_high, jnp.where(b_f[0] <= b_f[1], 0, 1), low).astype(int32)
        return _Zooming(
            b_t=b_t,
            b_f=b_f,
            b_g=b_g,
            b_gtd=b_gtd,
            low=new_low,
            insufficient=near_end & ~move,
            done=done,
            ls_iter=z.ls_iter + 1,
            evals=z.evals + 1,
        )

    zoom = _Zooming(
        b_t=s.b_t,
        b_f=s.b_f,
        b_g=s.b_g,
        b_gtd=s.b_gtd,
        low=jnp.where(s.b_f[0] <= s.b_f[1], 0, 1).astype(int32),
        insufficient=jnp.asarray(False),
        done=s.done,
        ls_iter=s.ls_iter,
        evals=s.evals,
    )
    z = jax.lax.while_loop(zoom_continues, zoom_step, zoom)
    return z.b_f[z.low], z.b_g[z.low], z.b_t[z.low], z.evals
