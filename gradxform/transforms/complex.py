"""Complex parameters as pairs of real numbers.

A transformation that keeps a second moment uses ``|g|^2`` for a complex gradient ``g``: one
moment for both parts (Optax's rule, the building blocks' default). torch's optimizers instead
see a complex tensor through ``torch.view_as_real``, as two independent real numbers with a
moment each. :func:`split_real_and_imaginary` (Optax's name and state) and :func:`real_pairs`
(the same view, with the inner state as the state, which the torch-named optimizers use) run
a transformation on such pairs.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _checks
from gradxform._base import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    as_transformation,
    expect_state,
    extra_args_filter,
)


class SplitRealAndImaginaryArrays(NamedTuple):
    """A complex leaf seen as two real arrays of its shape.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.split_real_and_imaginary(gx.trace(0.9))
      >>> state = tx.init(jnp.array([1.0 + 2.0j]))
      >>> state.inner_state.trace  # the momentum of a complex leaf, as two real arrays
      SplitRealAndImaginaryArrays(real=Array([0.], dtype=float32), imaginary=Array([0.],
      dtype=float32))
    """

    real: jax.Array
    imaginary: jax.Array


class SplitRealAndImaginaryState(NamedTuple):
    """``inner_state``: the state of the transformation run on the real pairs.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.split_real_and_imaginary(gx.scale_by_adam())
      >>> _, state = tx.update(jnp.array([3.0 - 4.0j]), tx.init(jnp.zeros(1, jnp.complex64)))
      >>> state.inner_state.mu  # (1 - b1) g, as real and imaginary parts
      SplitRealAndImaginaryArrays(real=Array([0.3], dtype=float32), imaginary=Array([-0.4],
      dtype=float32))
    """

    inner_state: Any


def _split(x: Any) -> Any:
    if x is not None and jnp.iscomplexobj(x):
        return SplitRealAndImaginaryArrays(jnp.real(x), jnp.imag(x))
    return x


def _merge(x: Any) -> Any:
    if isinstance(x, SplitRealAndImaginaryArrays):
        return jax.lax.complex(x.real, x.imaginary)
    return x


def _is_pair(x: Any) -> bool:
    return isinstance(x, SplitRealAndImaginaryArrays)


def split(tree: Any) -> Any:
    """Each complex leaf of ``tree`` as a :class:`SplitRealAndImaginaryArrays`; real leaves stay."""
    return None if tree is None else jax.tree.map(_split, tree)


def merge(tree: Any) -> Any:
    """The inverse of :func:`split`: pairs back into complex leaves."""
    return jax.tree.map(_merge, tree, is_leaf=_is_pair)


def real_pairs(inner: GradientTransformation) -> GradientTransformation:
    """Runs ``inner`` on complex leaves as (real, imaginary) pairs, as ``torch.view_as_real``.

    ::

        u <- merge(inner(split(u), split(p)))      split(z) = (re z, im z)

    The state is ``inner``'s own, built on the split params, so for real params it is exactly
    ``inner``'s state: nothing changes for models without complex leaves.

    Args:
      inner: the transformation to run on real numbers.

    Returns:
      A transformation whose state is ``inner``'s.
    """
    who = "real_pairs"
    inner = as_transformation(inner, who)
    keep_extra = extra_args_filter(inner.update)

    def init_fn(params):
        return inner.init(split(params))

    def update_fn(updates, state, params=None, **extra_args):
        # Before splitting: a complex gradient for a real param would otherwise become a pair
        # that matches nothing, and fail with a less clear message.
        _checks.check_against_params(who, updates, params)
        new_updates, state = inner.update(
            split(updates), state, split(params), **keep_extra(extra_args)
        )
        return merge(new_updates), state

    return GradientTransformationExtraArgs(init_fn, update_fn)


def split_real_and_imaginary(inner: GradientTransformation) -> GradientTransformation:
    """Optax's ``split_real_and_imaginary``: ``inner`` on the real and imaginary parts.

    ::

        u <- merge(inner(split(u), split(p)))      split(z) = (re z, im z)

    Each complex leaf is replaced by a :class:`SplitRealAndImaginaryArrays` of two real arrays
    before ``inner`` sees it, and the two parts of ``inner``'s update are merged back into a
    complex update; real leaves pass through unchanged. A second moment then treats the two
    parts as independent numbers (torch's rule for complex params) instead of using
    ``|g|^2``.

    Args:
      inner: the transformation to run on real numbers.

    Returns:
      A transformation whose state is :class:`SplitRealAndImaginaryState`.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt = gx.split_real_and_imaginary(gx.scale_by_adam())
      >>> params = {"z": jnp.array([1.0 + 1.0j])}
      >>> updates, _ = opt.update({"z": jnp.array([2.0 - 0.5j])}, opt.init(params), params)
      >>> [round(float(x), 6) for x in (updates["z"].real[0], updates["z"].imag[0])]
      [1.0, -1.0]
    """
    who = "split_real_and_imaginary"
    paired = real_pairs(as_transformation(inner, who))

    def init_fn(params):
        return SplitRealAndImaginaryState(paired.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        expect_state(who, state, SplitRealAndImaginaryState)
        updates, inner_state = paired.update(updates, state.inner_state, params, **extra_args)
        return updates, SplitRealAndImaginaryState(inner_state)

    return GradientTransformationExtraArgs(init_fn, update_fn)
