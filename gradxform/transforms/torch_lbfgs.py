"""L-BFGS: ``torch.optim.LBFGS``'s whole ``step(closure)`` as one transformation, and Optax's
L-BFGS preconditioner :func:`scale_by_lbfgs`.

torch's L-BFGS is not a preconditioner followed by a step size: one ``step`` runs up to
``max_iter`` inner iterations, each evaluating the loss (and its gradient) once or, with the
strong-Wolfe line search, several times. :func:`scale_by_torch_lbfgs` does the same inside one
``update``: the caller passes the loss at the params (``value``) and a function
``value_and_grad_fn(params) -> (loss, grads)``, the transformation runs torch's loop under
``lax.while_loop`` and returns the whole move. Like torch, it sees the params as one vector
(complex leaves as pairs of reals) and keeps the last ``history_size`` curvature pairs, here
in a ring buffer of fixed size so that every shape is static.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _checks, _tree, _validate
from gradxform._base import GradientTransformation, expect_state, require_params
from gradxform._types import StepCount
from gradxform.transforms.complex import merge, split
from gradxform.transforms.wolfe import strong_wolfe

# A pair (y, s) enters torch's history only with y.s above this (torch's fixed constant).
CURVATURE_THRESHOLD = 1e-10


class LbfgsState(NamedTuple):
    """What ``torch.optim.LBFGS`` keeps between steps, the params seen as one vector of ``n``.

    ``count``: updates made (int32). ``func_evals``, ``n_iter``: torch's counters of loss
    evaluations and inner iterations over all steps (int32). ``d``, ``t``: the last direction
    and step length. ``old_dirs``, ``old_stps``: ``(history_size, n)`` ring buffers of the
    gradient changes ``y`` and steps ``s``; ``ro``: their ``1 / y.s``; the oldest pair is at
    ``history_start`` and ``history_length`` are held. ``H_diag``: the initial inverse Hessian
    scale ``y.s / y.y``. ``prev_flat_grad``, ``prev_loss``: the gradient and loss where the
    last iteration started. Vectors and scalars are in the params' widest dtype (at least
    float32).

    Example:
      >>> import jax, jax.numpy as jnp, gradxform as gx
      >>> state = gx.lbfgs(history_size=4).init(jnp.zeros(3))
      >>> lbfgs_state = jax.tree.leaves(state, is_leaf=lambda s: isinstance(s, gx.LbfgsState))[0]
      >>> lbfgs_state.count, lbfgs_state.old_dirs.shape, lbfgs_state.history_length
      (Array(0, dtype=int32), (4, 3), Array(0, dtype=int32))
    """

    count: StepCount
    func_evals: jax.Array
    n_iter: jax.Array
    d: jax.Array
    t: jax.Array
    old_dirs: jax.Array
    old_stps: jax.Array
    ro: jax.Array
    history_start: jax.Array
    history_length: jax.Array
    H_diag: jax.Array
    prev_flat_grad: jax.Array
    prev_loss: jax.Array


class _FlatView(NamedTuple):
    """The params as one vector, as torch concatenates them (complex leaves as real pairs)."""

    treedef: Any
    shapes: tuple
    dtypes: tuple
    dtype: Any

    @classmethod
    def of(cls, params: Any) -> _FlatView:
        leaves, treedef = jax.tree.flatten(split(params))
        dtypes = tuple(jnp.result_type(x) for x in leaves)
        return cls(
            treedef, tuple(jnp.shape(x) for x in leaves), dtypes, _tree.compute_dtype(*dtypes)
        )

    @property
    def size(self) -> int:
        return sum(math.prod(shape) for shape in self.shapes)

    def flatten(self, tree: Any) -> jax.Array:
        leaves = self.treedef.flatten_up_to(split(tree))
        parts = [jnp.ravel(x).astype(self.dtype) for x in leaves]
        return jnp.concatenate(parts) if parts else jnp.zeros([0], self.dtype)

    def unflatten(self, vector: jax.Array, dtypes: tuple) -> Any:
        leaves, offset = [], 0
        for shape, dtype in zip(self.shapes, dtypes, strict=True):
            size = math.prod(shape)
            leaves.append(vector[offset : offset + size].reshape(shape).astype(dtype))
            offset += size
        return merge(self.treedef.unflatten(leaves))

    def params(self, vector: jax.Array) -> Any:
        """The params tree (each leaf in its own dtype) at ``vector``."""
        return self.unflatten(vector, self.dtypes)

    def updates(self, vector: jax.Array) -> Any:
        """An update tree from ``vector``, each leaf in its update dtype (>= float32)."""
        return self.unflatten(vector, tuple(_tree.compute_dtype(d) for d in self.dtypes))


def check_torch_lbfgs(
    who: str,
    learning_rate: Any,
    max_iter: Any,
    max_eval: Any,
    tolerance_grad: Any,
    tolerance_change: Any,
    history_size: Any,
    line_search_fn: Any,
) -> None:
    """The arguments of ``torch.optim.LBFGS``, named as there."""
    _validate.learning_rate(who, learning_rate)
    _validate.count(who, "max_iter", max_iter, traced_ok=True)
    if max_eval is not None:
        _validate.count(who, "max_eval", max_eval, traced_ok=True)
    _validate.non_negative(who, "tolerance_grad", tolerance_grad)
    _validate.non_negative(who, "tolerance_change", tolerance_change)
    _validate.count(who, "history_size", history_size)
    _validate.choice(who, "line_search_fn", line_search_fn, (None, "strong_wolfe"))


def _two_loop(g, dirs, stps, ro, start, length, h_diag):
    """torch's two-loop recursion: ``-H g`` for the L-BFGS inverse Hessian ``H`` of the pairs
    held, newest first on the way back, oldest first on the way forward."""
    size = ro.shape[0]

    def backward(j, carry):
        q, al = carry
        k = (start + length - 1 - j) % size
        a = (stps[k] @ q) * ro[k]
        return q + (-a) * dirs[k], al.at[k].set(a)

    q, al = jax.lax.fori_loop(0, length, backward, (-g, jnp.zeros_like(ro)))

    def forward(i, r):
        k = (start + i) % size
        be = (dirs[k] @ r) * ro[k]
        return r + (al[k] - be) * stps[k]

    return jax.lax.fori_loop(0, length, forward, q * h_diag)


class _Iterate(NamedTuple):
    """The inner loop's state: where the step is, and torch's state as it goes."""

    x: jax.Array
    loss: jax.Array
    g: jax.Array
    opt_cond: jax.Array
    stop: jax.Array
    n_iter: jax.Array  # this step's iterations
    current_evals: jax.Array
    state: LbfgsState


def scale_by_torch_lbfgs(
    learning_rate: Any = 1.0,
    *,
    max_iter: int = 20,
    max_eval: int | None = None,
    tolerance_grad: float = 1e-7,
    tolerance_change: float = 1e-9,
    history_size: int = 100,
    line_search_fn: str | None = None,
    who: str = "scale_by_torch_lbfgs",
) -> GradientTransformation:
    """One ``torch.optim.LBFGS.step(closure)`` per ``update`` (Liu & Nocedal, 1989).

    ``update(grads, state, params, value=f(params), value_and_grad_fn=f_and_grad)`` returns
    the move of the whole step. From ``x = params``, ``g = grads``, each inner iteration::

        y = g - g_prev,  s = t_prev d_prev;  keep (y, s) if y.s > 1e-10, H_diag = y.s / y.y
        d = -H g          (two-loop recursion over the last history_size pairs; -g at first)
        t = min(1, 1 / |g|_1) lr at the very first iteration, else lr
        stop if g.d > -tolerance_change
        x <- x + t d      (t from the strong-Wolfe search, or fixed and f re-evaluated)

    and the step ends after ``max_iter`` iterations, ``max_eval`` evaluations (default
    ``max_iter * 5 // 4``), or when ``max |g| <= tolerance_grad``, ``max |t d| <=
    tolerance_change`` or ``|f - f_prev| < tolerance_change``, checked in torch's order. The
    strong-Wolfe search (:func:`gradxform.transforms.wolfe.strong_wolfe`, ``c1 = 1e-4``,
    ``c2 = 0.9``) stops zooming at torch's fixed ``1e-9``, not at ``tolerance_change`` (torch
    does not pass it on). The vectors and scalars are computed in the params' widest dtype, at
    least float32, and rounded into each param once, by ``apply_updates``.

    Args:
      learning_rate: torch's ``lr`` (a number, or a schedule of the update count).
      max_iter: the most inner iterations per update (an int, or an array: a loop bound).
      max_eval: the most loss evaluations per update, the one passed in as ``value``
        included (default ``max_iter * 5 // 4``).
      tolerance_grad: stop when ``max |g| <= tolerance_grad``.
      tolerance_change: stop when the loss, the params or the slope change less.
      history_size: how many ``(y, s)`` pairs to keep (a shape: a Python int).
      line_search_fn: ``None`` or ``"strong_wolfe"``.
      who: the name errors give (the optimizer's, when it builds this).

    Returns:
      A transformation whose state is :class:`LbfgsState`; its ``update`` needs ``params``,
      ``value`` and ``value_and_grad_fn``.
    """

    check_torch_lbfgs(
        who, learning_rate, max_iter, max_eval, tolerance_grad, tolerance_change, history_size,
        line_search_fn,
    )  # fmt: skip
    if max_eval is None:
        max_eval = max_iter * 5 // 4

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        view = _FlatView.of(params)
        n, dtype = view.size, view.dtype
        return LbfgsState(
            count=jnp.zeros([], jnp.int32),
            func_evals=jnp.zeros([], jnp.int32),
            n_iter=jnp.zeros([], jnp.int32),
            d=jnp.zeros([n], dtype),
            t=jnp.zeros([], dtype),
            old_dirs=jnp.zeros([history_size, n], dtype),
            old_stps=jnp.zeros([history_size, n], dtype),
            ro=jnp.zeros([history_size], dtype),
            history_start=jnp.zeros([], jnp.int32),
            history_length=jnp.zeros([], jnp.int32),
            H_diag=jnp.ones([], dtype),
            prev_flat_grad=jnp.zeros([n], dtype),
            prev_loss=jnp.zeros([], dtype),
        )

    def update_fn(updates, state, params=None, *, value=None, value_and_grad_fn=None, **extra):
        del extra
        expect_state(who, state, LbfgsState)
        require_params(who, params, "L-BFGS evaluates the loss around them.")
        _checks.check_updates(who, updates, params, "param")
        if value is None or value_and_grad_fn is None:
            raise ValueError(
                f"{who} needs the loss and a way to evaluate it: call "
                "`update(grads, state, params, value=loss, value_and_grad_fn=f)` with "
                "`f(params) -> (loss, grads)`, e.g. `jax.value_and_grad(loss_fn)`."
            )
        _validate.function(who, "value_and_grad_fn", value_and_grad_fn)
        view = _FlatView.of(params)
        dtype = view.dtype

        def scalar(v, what):
            if jnp.shape(v) != ():
                raise ValueError(f"{who}: the {what} must be a scalar, got shape {jnp.shape(v)}")
            return jnp.asarray(v).astype(dtype)

        def evaluate(x):
            loss, grads = value_and_grad_fn(view.params(x))
            _checks.check_updates(who, split(grads), split(params), "param")
            return scalar(loss, "loss from `value_and_grad_fn`"), view.flatten(grads)

        def opt_cond(g):
            return jnp.max(jnp.abs(g), initial=0) <= tolerance_grad

        lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
        lr = jnp.asarray(lr).astype(dtype)

        def move(it: _Iterate, gtd: jax.Array) -> _Iterate:
            """Steps along ``d``, re-evaluates, and checks torch's stopping conditions."""
            s = it.state
            if line_search_fn == "strong_wolfe":
                loss, g, t, evals = strong_wolfe(
                    lambda t: evaluate(it.x + t * s.d),
                    s.t,
                    s.d,
                    it.loss,
                    it.g,
                    gtd,
                    max_eval - it.current_evals,
                )
                x = it.x + t * s.d
                done = opt_cond(g)
            else:
                t, x = s.t, it.x + s.t * s.d

                def reevaluate(x):
                    loss, g = evaluate(x)
                    return loss, g, opt_cond(g), jnp.ones([], jnp.int32)

                # torch skips the evaluation in the last iteration: so does a cond, which
                # leaves the (possibly costly) function out instead of discarding its result.
                loss, g, done, evals = jax.lax.cond(
                    it.n_iter != max_iter,
                    reevaluate,
                    lambda x: (it.loss, it.g, it.opt_cond, jnp.zeros([], jnp.int32)),
                    x,
                )
            current_evals = it.current_evals + evals
            stop = (
                (it.n_iter == max_iter)
                | (current_evals >= max_eval)
                | done
                | (jnp.max(jnp.abs(s.d * t), initial=0) <= tolerance_change)
                | (jnp.abs(loss - s.prev_loss) < tolerance_change)
            )
            s = s._replace(t=t.astype(dtype), func_evals=s.func_evals + evals)
            return _Iterate(x, loss, g, done, stop, it.n_iter, current_evals, s)

        def iteration(it: _Iterate) -> _Iterate:
            s = it.state
            n_iter = _tree.safe_increment(s.n_iter)
            first = n_iter == 1
            # The curvature pair of the last move. At the very first iteration d, t and the
            # history are init's zeros, so nothing is kept and the recursion gives d = -g.
            y, step = it.g - s.prev_flat_grad, s.d * s.t
            ys = y @ step
            keep = ~first & (ys > CURVATURE_THRESHOLD)
            size = s.ro.shape[0]
            full = s.history_length == size
            slot = (s.history_start + s.history_length) % size  # the oldest, when full
            old_dirs = s.old_dirs.at[slot].set(jnp.where(keep, y, s.old_dirs[slot]))
            old_stps = s.old_stps.at[slot].set(jnp.where(keep, step, s.old_stps[slot]))
            ro = s.ro.at[slot].set(jnp.where(keep, 1.0 / ys, s.ro[slot]))
            start = jnp.where(keep & full, (s.history_start + 1) % size, s.history_start)
            length = jnp.where(keep & ~full, s.history_length + 1, s.history_length)
            h_diag = jnp.where(keep, ys / (y @ y), s.H_diag)
            d = _two_loop(it.g, old_dirs, old_stps, ro, start, length, h_diag)
            t = jnp.where(first, _min_one(1.0 / jnp.sum(jnp.abs(it.g))) * lr, lr)
            gtd = it.g @ d
            s = LbfgsState(
                s.count, s.func_evals, n_iter, d, t, old_dirs, old_stps, ro, start, length,
                h_diag, it.g, it.loss,
            )  # fmt: skip
            it = it._replace(n_iter=it.n_iter + 1, state=s)
            # Not a descent direction (or no slope left): stop before moving, as torch does.
            return jax.lax.cond(
                gtd > -tolerance_change, lambda it: it._replace(stop=jnp.asarray(True)),
                lambda it: move(it, gtd), it,
            )  # fmt: skip

        x0, g0 = view.flatten(params), view.flatten(updates)
        loss0 = scalar(value, "`value`")
        done0 = opt_cond(g0)
        one = jnp.ones([], jnp.int32)
        start = state._replace(count=_tree.safe_increment(state.count))
        start = start._replace(func_evals=state.func_evals + one)
        zero = jnp.zeros([], jnp.int32)
        it = _Iterate(x0, loss0, g0, done0, done0, zero, one, start)
        it = jax.lax.while_loop(lambda it: ~it.stop, iteration, it)
        return view.updates(it.x - x0), it.state

    return GradientTransformation(init_fn, update_fn)


def _min_one(value: jax.Array) -> jax.Array:
    """Python's ``min(1.0, value)``: ``value`` only if it is below 1 (a NaN gives 1)."""
    return jnp.where(value < 1.0, value, 1.0)
