"""Tree arithmetic: the few pytree operations every transformation is written with.

Everything here treats ``None`` as JAX does, as an empty subtree, so ``None`` leaves in a
parameter tree are passed over. Functions that combine several trees check that their
structures agree and, when they do not, raise an error that prints both structures.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradxform import _validate

ArrayTree = Any

__all__ = [
    "check_inexact_leaves",
    "check_same_structure",
    "compute_dtype",
    "default_float_dtype",
    "real_dtype",
    "tree_add",
    "tree_add_scaled",
    "tree_bias_correction",
    "tree_cast",
    "tree_global_norm",
    "tree_map_multi",
    "tree_moment_update",
    "tree_scale",
    "tree_squared_norm",
    "tree_subtract",
    "tree_vdot",
    "tree_where",
    "tree_zeros_like",
]


def _none_is_leaf(x: Any) -> bool:
    return x is None


def check_same_structure(
    expected: ArrayTree,
    got: ArrayTree,
    expected_name: str,
    got_name: str,
    none_is_leaf: bool = False,
    who: str | None = None,
) -> None:
    """Raises ``ValueError`` showing both tree structures when they differ.

    With ``none_is_leaf`` a ``None`` in either tree matches any leaf of the other.
    """
    is_leaf = _none_is_leaf if none_is_leaf else None
    expected_def = jax.tree.structure(expected, is_leaf=is_leaf)
    got_def = jax.tree.structure(got, is_leaf=is_leaf)
    if expected_def != got_def:
        prefix = f"{who}: " if who else ""
        raise ValueError(
            f"{prefix}the {got_name} tree does not match the {expected_name} tree.\n"
            f"  {expected_name}: {expected_def}\n"
            f"  {got_name}: {got_def}\n"
            "Did you pass a gradient tree of a different model, or params in place of updates?"
        )


def path_name(path: tuple) -> str:
    """A leaf's path as JAX prints it (``['w']``), or ``<root>`` for a tree that is one leaf."""
    return jax.tree_util.keystr(path) or "<root>"


def check_inexact_leaves(params: ArrayTree, who: str, what: str = "parameter") -> None:
    """Raises ``TypeError`` when a leaf (a parameter, or ``what``) is not floating or complex."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        dtype = jnp.result_type(leaf)
        if what != "parameter" and not jnp.issubdtype(dtype, jnp.inexact):
            raise TypeError(
                f"{who}: the {what} at {path_name(path)} has dtype {dtype}; gradients and "
                "updates must be floating point (or complex, for complex params)."
            )
        if not jnp.issubdtype(dtype, jnp.inexact):
            raise TypeError(
                f"{who}: parameter {path_name(path)} has dtype {dtype}; "
                "optimizers only update floating-point or complex leaves. Keep integer and "
                "boolean leaves out of the optimized tree, or mask them with `gradxform.masked`."
            )


def default_float_dtype() -> np.dtype:
    """float64 when ``jax_enable_x64`` is on, else float32."""
    return jnp.dtype(jax.dtypes.canonicalize_dtype(jnp.float64))


def real_dtype(dtype: Any) -> np.dtype:
    """The real counterpart of ``dtype`` (complex64 -> float32, float32 -> float32)."""
    return jnp.dtype(jnp.finfo(dtype).dtype)


def compute_dtype(*dtypes: Any) -> np.dtype:
    """The dtype in which an update is computed: the widest input, at least float32.

    Low-precision leaves (bf16, fp16) are computed in float32 and rounded once when stored.
    """
    return jnp.dtype(jnp.result_type(*dtypes, jnp.float32))


def update_dtype(gradient: jax.Array, *state: jax.Array | None) -> np.dtype:
    """The dtype of an update computed from a gradient and state: their promotion, >= float32.

    Low-precision updates are not rounded here: the parameter is rounded once, in
    ``apply_updates``. Rounding a large update to float16 here could also overflow it to inf,
    and a learning rate of 0 would then turn it into NaN.
    """
    return compute_dtype(gradient.dtype, *(s.dtype for s in state if s is not None))


def tree_map_multi(fn: Callable[..., tuple], num_outputs: int, tree: ArrayTree, *rest: ArrayTree):
    """Maps ``fn`` returning ``num_outputs`` values over leaves; returns that many trees.

    Used so that one function computes a leaf's update and its new state together, which
    lets XLA produce them in a single pass over memory.
    """
    treedef = jax.tree.structure(tree)
    leaves = treedef.flatten_up_to(tree)
    rest_leaves = [treedef.flatten_up_to(r) for r in rest]
    outputs = [fn(*args) for args in zip(leaves, *rest_leaves, strict=True)]
    if not outputs:
        return tuple(treedef.unflatten([]) for _ in range(num_outputs))
    return tuple(treedef.unflatten([out[i] for out in outputs]) for i in range(num_outputs))


def _full_like_leaf(x: Any, value: Any, dtype: Any | None) -> jax.Array:
    """``value`` shaped like ``x``, placed (sharded) like ``x``.

    Eagerly this is ``lax.full_like``. Under ``jit`` the sharding of ``x`` is not always known
    while tracing (never on a mesh with automatic axes), and a constant that does not depend on
    ``x`` is compiled as replicated: an optimizer state made of such constants would be whole
    on every device. Multiplying by ``1 + 0 * |x|`` (with ``0`` where ``x`` is not finite, so
    the factor is exactly 1) ties the result to ``x``, and sharding propagation gives it
    ``x``'s sharding. The compiler cannot fold the tie before that (``0 * inf`` is NaN); it
    costs one elementwise read of ``x``.
    """
    dtype = dtype or jnp.result_type(x)
    if not _validate.is_traced(x):
        # Outside a trace the sharding of `x` is known: one allocation, placed like `x` (the
        # tie below would materialise several temporaries of x's size when run eagerly).
        return jax.lax.full_like(x, value, dtype)
    full = jnp.full(jnp.shape(x), value, dtype)
    if not jnp.issubdtype(jnp.result_type(x), jnp.inexact):
        return full
    tie = jnp.where(jnp.isfinite(x), jnp.abs(x) * 0, 0).astype(dtype)
    return (full * (1 + tie)).astype(dtype)


def tree_zeros_like(tree: ArrayTree, dtype: Any | None = None) -> ArrayTree:
    """Zeros shaped like each leaf, in ``dtype`` or the leaf's own dtype, sharded like it."""
    return jax.tree.map(lambda x: _full_like_leaf(x, 0, dtype), tree)


def tree_full_like(tree: ArrayTree, value: float, dtype: Any | None = None) -> ArrayTree:
    """``value`` shaped like each leaf, in ``dtype`` or the leaf's own dtype, sharded like it."""
    return jax.tree.map(lambda x: _full_like_leaf(x, value, dtype), tree)


def tree_cast(tree: ArrayTree, dtype: Any | None) -> ArrayTree:
    """Casts every leaf to ``dtype``; ``None`` leaves the tree as it is."""
    if dtype is None:
        return tree
    return jax.tree.map(lambda x: jnp.asarray(x).astype(dtype), tree)


def tree_add(a: ArrayTree, b: ArrayTree) -> ArrayTree:
    """``a + b`` leaf by leaf, in ``a``'s dtypes."""
    return jax.tree.map(lambda x, y: (x + y).astype(jnp.result_type(x)), a, b)


def tree_subtract(a: ArrayTree, b: ArrayTree) -> ArrayTree:
    """``a - b`` leaf by leaf, in ``a``'s dtypes."""
    return jax.tree.map(lambda x, y: (x - y).astype(jnp.result_type(x)), a, b)


def tree_scale(scalar: Any, tree: ArrayTree) -> ArrayTree:
    """``scalar * tree``, each leaf keeping its dtype."""
    return jax.tree.map(lambda x: scale_leaf(scalar, x), tree)


def tree_add_scaled(a: ArrayTree, scalar: Any, b: ArrayTree) -> ArrayTree:
    """``a + scalar * b`` leaf by leaf, in ``a``'s dtypes."""

    def leaf(x, y):
        dtype = compute_dtype(jnp.result_type(x), jnp.result_type(y))
        out = x.astype(dtype) + cast_scalar(scalar, dtype) * y.astype(dtype)
        return out.astype(jnp.result_type(x))

    return jax.tree.map(leaf, a, b)


def tree_where(condition: Any, a: ArrayTree, b: ArrayTree) -> ArrayTree:
    """``where(condition, a, b)`` leaf by leaf; ``condition`` is a scalar or a matching tree."""
    if isinstance(condition, jax.Array | np.ndarray | bool):
        return jax.tree.map(lambda x, y: jnp.where(condition, x, y), a, b)
    return jax.tree.map(lambda c, x, y: jnp.where(c, x, y), condition, a, b)


def tree_vdot(a: ArrayTree, b: ArrayTree) -> jax.Array:
    """The inner product ``sum(conj(a) * b)`` over all leaves, accumulated in >= float32."""
    parts = [
        jnp.vdot(x.astype(compute_dtype(x.dtype)), y.astype(compute_dtype(y.dtype)))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    ]
    return sum(parts, jnp.zeros([], default_float_dtype()))


def abs_sq(x: jax.Array) -> jax.Array:
    """``|x|^2``, real-valued also for complex ``x``."""
    if jnp.iscomplexobj(x):
        return jnp.real(x) ** 2 + jnp.imag(x) ** 2
    return x * x


def tree_squared_norm(tree: ArrayTree, axis_name: str | None = None) -> jax.Array:
    """``sum |x|^2`` over every element of every leaf, accumulated in >= float32.

    With ``axis_name`` the sum also runs over that mapped axis (``lax.psum``), which gives the
    norm of the whole model when each device holds a shard of it.
    """
    leaves = jax.tree.leaves(tree)
    total = jnp.zeros([], default_float_dtype())
    for x in leaves:
        x = x.astype(compute_dtype(x.dtype))
        total = total + jnp.sum(abs_sq(x)).astype(total.dtype)
    if axis_name is not None:
        total = jax.lax.psum(total, axis_name)
    return total


def tree_global_norm(tree: ArrayTree, axis_name: str | None = None) -> jax.Array:
    """The l2 norm of all leaves taken together, ``sqrt(sum |x|^2)``."""
    return jnp.sqrt(tree_squared_norm(tree, axis_name))


def cast_scalar(value: Any, dtype: Any) -> Any:
    """Casts a scalar hyperparameter to the real dtype matching ``dtype``.

    Python numbers are returned unchanged (they are weakly typed and adapt); arrays are cast
    so that a float32 (or float64) hyperparameter never promotes a bf16 or float32 leaf.
    """
    if isinstance(value, int | float):
        return value
    return jnp.asarray(value).astype(real_dtype(dtype))


def scale_leaf(scalar: Any, x: jax.Array) -> jax.Array:
    """``scalar * x`` in ``x``'s dtype."""
    dtype = jnp.result_type(x)
    return (cast_scalar(scalar, compute_dtype(dtype)) * x).astype(dtype)


def moment_update(moment: jax.Array, value: jax.Array, decay: Any, dtype: Any) -> jax.Array:
    """``decay * moment + (1 - decay) * value``, computed in ``dtype``."""
    decay = cast_scalar(decay, dtype)
    return decay * moment.astype(dtype) + (1 - decay) * value


def as_real(x: jax.Array, dtype: Any) -> jax.Array:
    """``x`` in the real ``dtype``; a complex ``x`` (a second moment kept in a complex param's
    dtype, whose imaginary part is 0) gives its real part."""
    return (jnp.real(x) if jnp.iscomplexobj(x) else x).astype(dtype)


def square_moment_update(moment: jax.Array, g: jax.Array, decay: Any, dtype: Any) -> jax.Array:
    """``decay * v + (1 - decay) * |g|^2``, in the real counterpart of ``dtype``.

    The weight multiplies ``g`` before the second factor does, ``((1 - decay) * g) * g``, as
    torch's ``addcmul`` computes it: ``g * g`` alone overflows float32 for ``|g| > 1.8e19``,
    which would make the moment infinite and freeze that parameter for good, while the weighted
    product stays finite up to ``|g| ~ 1.8e19 / sqrt(1 - decay)``. Complex ``g`` counts as
    ``|g|^2 = re^2 + im^2``.
    """
    real = real_dtype(dtype)
    decay = cast_scalar(decay, real)
    weight = 1 - decay
    if jnp.iscomplexobj(g):
        re, im = jnp.real(g).astype(real), jnp.imag(g).astype(real)
        square = (weight * re) * re + (weight * im) * im
    else:
        g = g.astype(real)
        square = (weight * g) * g
    return decay * as_real(moment, real) + square


def safe_divide(numerator: jax.Array, denominator: jax.Array, may_be_zero: bool) -> jax.Array:
    """``numerator / denominator``, giving 0 where the denominator is 0 if ``may_be_zero``.

    A preconditioner's denominator ``sqrt(v) + eps`` is zero only when ``eps`` is 0 and the
    gradient history is all zeros, where the numerator is zero too and 0/0 would be NaN. The
    guard is left out only when a static ``eps`` (or ``eps_root``) is known to be non-zero: an
    injected or traced ``eps`` may be 0, so it always gets the guard.
    """
    if may_be_zero:
        return numerator / jnp.where(denominator == 0, 1, denominator)
    return numerator / denominator


def tree_moment_update(moments: ArrayTree, values: ArrayTree, decay: Any) -> ArrayTree:
    """``decay * m + (1 - decay) * v`` leaf by leaf; each moment keeps its dtype."""

    def leaf(m, v):
        dtype = compute_dtype(m.dtype, v.dtype)
        return moment_update(m, v.astype(dtype), decay, dtype).astype(m.dtype)

    return jax.tree.map(leaf, moments, values)


def bias_correction(decay: Any, count: jax.Array) -> jax.Array:
    """``1 - decay ** count`` for a counter that already counts the current step (>= 1).

    Written as ``-expm1(count * log(decay))``: subtracting ``decay ** count`` from 1 in float32
    would cancel most digits (about 1e-5 relative error for ``decay = 0.999``). For a static
    ``decay`` the logarithm is taken in Python's float64, as torch computes it.
    """
    dtype = default_float_dtype()
    steps = count.astype(dtype)
    if _validate.is_static_number(decay):
        if float(decay) == 0.0:
            return jnp.ones_like(steps)
        log_decay = jnp.asarray(math.log(float(decay)), dtype)
    else:
        log_decay = jnp.log(jnp.asarray(decay).astype(dtype))
    return -jnp.expm1(steps * log_decay)


def tree_bias_correction(moments: ArrayTree, decay: Any, count: jax.Array) -> ArrayTree:
    """``m / (1 - decay ** count)`` leaf by leaf, each moment keeping its dtype."""
    correction = bias_correction(decay, count)
    return jax.tree.map(
        lambda m: (m / cast_scalar(correction, compute_dtype(m.dtype))).astype(m.dtype), moments
    )


def safe_increment(count: jax.Array) -> jax.Array:
    """``count + 1`` for an int32 counter, saturating instead of wrapping around."""
    limit = jnp.iinfo(count.dtype).max
    return jnp.where(count < limit, count + 1, limit).astype(count.dtype)


def nesterov_weights(b1: Any, count: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The scalars ``(b1 / (1 - b1^(t+1)), (1 - b1) / (1 - b1^t))`` of Optax's Nesterov
    estimate ``b1 m_t / (1 - b1^(t+1)) + (1 - b1) g_t / (1 - b1^t)``, for ``count = t >= 1``:
    computed once per update, so that each element takes one product per term."""
    ahead = bias_correction(b1, safe_increment(count))
    return b1 / ahead, (1 - b1) / bias_correction(b1, count)


def torch_lerp(start: jax.Array, end: jax.Array, weight: Any) -> jax.Array:
    """``start + weight (end - start)`` with torch's rounding: for ``|weight| >= 0.5`` it is
    computed from the other end, ``end - (1 - weight) (end - start)``."""
    difference = end - start
    small = start + weight * difference
    large = end - (1 - weight) * difference
    if _validate.is_static_number(weight):
        return small if abs(float(weight)) < 0.5 else large
    return jnp.where(jnp.abs(weight) < 0.5, small, large)
