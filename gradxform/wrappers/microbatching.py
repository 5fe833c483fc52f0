"""Micro-batching inside one step: a function of a batch evaluated on slices of it, one after
another, its outputs accumulated (Optax's ``microbatch``).

Peak memory is that of one micro-batch; with ``"mean"`` (or ``"sum"`` of a per-example sum) the
result equals one evaluation on the whole batch, so an optimizer step on it is the step on the
whole batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from gradxform import _validate

_ACCUMULATORS = ("sum", "mean")


def _accumulator_name(who: str, accumulator: Any) -> str:
    # Optax's AccumulationType.SUM / .MEAN are accepted by their names.
    name = getattr(accumulator, "name", accumulator)
    if isinstance(name, str) and name.lower() in _ACCUMULATORS:
        return name.lower()
    raise TypeError(
        f"{who}: `accumulator` must be 'sum' or 'mean' (or Optax's AccumulationType.SUM or "
        f".MEAN), got {accumulator!r}"
    )


def microbatch(
    fun: Callable[..., Any],
    argnums: int | Sequence[int],
    microbatch_size: int | None,
    accumulator: Any = "sum",
    *,
    in_axes: int | Sequence[int] = 0,
) -> Callable[..., Any]:
    """``fun`` evaluated on micro-batches of its batch arguments, in a ``lax.scan``.

    With a batch of ``B`` examples along ``in_axes`` of the arguments ``argnums`` and
    ``n = B / microbatch_size`` micro-batches (micro-batch ``j`` holds the examples
    ``j, j + n, j + 2n, ...``, as Optax's, so that a batch sharded along its axis stays local)::

        out = sum_j fun(..., batch_j, ...)          ("sum")
        out = (1 / n) sum_j fun(..., batch_j, ...)  ("mean")

    leaf by leaf over ``fun``'s output tree. For a loss that is a mean over examples,
    ``microbatch(jax.grad(loss), 1, m, "mean")(params, batch)`` is ``jax.grad(loss)(params,
    batch)`` up to rounding.

    Args:
      fun: the function (e.g. ``jax.value_and_grad(loss)``).
      argnums: the position(s) of the batch arguments.
      microbatch_size: the examples per micro-batch (dividing the batch size), or ``None`` to
        return ``fun`` itself.
      accumulator: ``"sum"`` or ``"mean"`` (or Optax's ``AccumulationType.SUM`` / ``.MEAN``).
      in_axes: the batch axis of each batch argument (one int for all).

    Returns:
      The micro-batched function, with ``fun``'s signature.

    Example:
      >>> import jax, jax.numpy as jnp, gradxform as gx
      >>> loss = lambda w, x: jnp.mean((x * w) ** 2)
      >>> batch = jnp.arange(4.0)
      >>> grad = gx.microbatch(jax.grad(loss), 1, 2, "mean")  # two micro-batches of two
      >>> float(grad(1.0, batch)), float(jax.grad(loss)(1.0, batch))  # mean(2 x^2) = 7
      (7.0, 7.0)
    """
    who = "microbatch"
    _validate.function(who, "fun", fun)
    if microbatch_size is None:
        return fun
    _validate.count(who, "microbatch_size", microbatch_size)
    kind = _accumulator_name(who, accumulator)
    argnums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    if not isinstance(in_axes, tuple | list):
        _validate.count(who, "in_axes", in_axes, minimum=0)
    axes = (in_axes,) * len(argnums) if isinstance(in_axes, int) else tuple(in_axes)
    if len(axes) != len(argnums):
        raise TypeError(f"{who}: `in_axes` must give one axis per batch argument, got {in_axes!r}")

    def microbatched(*args, **kwargs):
        sizes = {
            jnp.shape(x)[axis]
            for i, axis in zip(argnums, axes, strict=True)
            for x in jax.tree.leaves(args[i])
        }
        if len(sizes) != 1:
            raise ValueError(f"{who}: the batch arguments have different batch sizes {sizes}")
        (size,) = sizes
        if size % microbatch_size:
            raise ValueError(
                f"{who}: the batch size {size} is not a multiple of microbatch_size "
                f"{microbatch_size}"
            )
        n = size // microbatch_size

        def split(x, axis):
            # (..., B, ...) -> (n, ..., m, ...): example j + k n goes to micro-batch j, slot k.
            shape = (*x.shape[:axis], microbatch_size, n, *x.shape[axis + 1 :])
            return jnp.moveaxis(x.reshape(shape), axis + 1, 0)

        stacked = {
            i: jax.tree.map(lambda x, a=axis: split(x, a), args[i])
            for i, axis in zip(argnums, axes, strict=True)
        }

        def call(slices):
            full = list(args)
            for i, value in slices.items():
                full[i] = value
            return fun(*full, **kwargs)

        first = jax.tree.map(lambda x: x[0], stacked)
        shapes = jax.eval_shape(call, first)
        zero = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

        def body(total, slices):
            out = call(slices)
            return jax.tree.map(lambda t, o: (t + o).astype(t.dtype), total, out), None

        total, _ = jax.lax.scan(body, zero, stacked)
        if kind == "mean":
            total = jax.tree.map(lambda t: t / jnp.asarray(n, t.dtype), total)
        return total

    return microbatched
