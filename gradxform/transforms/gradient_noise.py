"""Annealed Gaussian gradient noise (Neelakantan et al., 2015), with Optax's keys and numbers.

The state keeps the key's raw bits as int32 (JAX's key data, bit-cast), so that it is made of
plain integer arrays that checkpoints, flat buffers and dtype checks take as they take counters;
``jax.random.wrap_key_data(lax.bitcast_convert_type(rng_key, jnp.uint32))`` is Optax's key.
"""

from __future__ import annotations

import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradxform import _checks, _tree, _validate
from gradxform._base import GradientTransformation, expect_state


class AddNoiseState(NamedTuple):
    """Optax's fields: ``count`` (int32) and ``rng_key``, the key's raw bits as int32."""

    count: jax.Array
    rng_key: jax.Array


def key_bits(who: str, key: Any) -> tuple[np.ndarray, Any]:
    """``(bits, impl)`` of a key given as an int seed, a typed key or a raw uint32 key."""
    if isinstance(key, bool) or not (
        isinstance(key, numbers.Integral | jax.Array | np.ndarray | np.integer)
    ):
        raise TypeError(f"{who}: `key` must be an int seed or a JAX random key, got {key!r}")
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"{who}: `key` must be one key, got shape {key.shape}")
        return jax.random.key_data(key), jax.random.key_impl(key)
    array = np.asarray(key) if not isinstance(key, jax.Array) else key
    if array.ndim == 0:
        if not jnp.issubdtype(array.dtype, jnp.integer):
            raise TypeError(f"{who}: `key` must be an int seed or a JAX random key, got {key!r}")
        typed = jax.random.key(int(array))
        return jax.random.key_data(typed), jax.random.key_impl(typed)
    if array.dtype != np.uint32:
        raise TypeError(f"{who}: a raw `key` must be uint32 key data, got dtype {array.dtype}")
    typed = jax.random.wrap_key_data(jnp.asarray(array))
    return jax.random.key_data(typed), jax.random.key_impl(typed)


def add_gradient_noise(
    eta: Any, gamma: Any, key: Any, who: str, *, seed: int | None = None
) -> GradientTransformation:
    """``g <- g + sqrt(eta / t^gamma) * N(0, 1)``, one normal draw per element, as Optax's
    ``add_noise``: given the same key, the same numbers.

    Each step splits the key into the next key and a sample key, and the sample key into one
    key per leaf (in the tree's leaf order). Leaves of at least float32 draw in their dtype (as
    Optax); bfloat16 and float16 leaves draw in float32. ``key=None`` means ``0``, as Optax
    takes it; ``seed`` is Optax's deprecated name for it.

    Not exported: :func:`gradxform.noisy_sgd`'s link (the public ``add_noise`` is Optax's).
    """
    _validate.non_negative(who, "eta", eta)
    _validate.finite(who, "gamma", gamma)
    if seed is not None:
        if key is not None:
            raise ValueError(f"{who}: give `key` or `seed` (deprecated), not both")
        key = seed
    # Eagerly, also when the factory is called inside a trace (inject_hyperparams does).
    with jax.ensure_compile_time_eval():
        bits, impl = key_bits(who, 0 if key is None else key)
        stored = jax.lax.bitcast_convert_type(bits, jnp.int32)

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        return AddNoiseState(jnp.zeros([], jnp.int32), jnp.asarray(stored))

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        expect_state(who, state, AddNoiseState)
        _checks.check_against_params(who, updates, params)
        count = _tree.safe_increment(state.count)
        dtype = _tree.default_float_dtype()
        scale = jnp.sqrt(
            _tree.cast_scalar(eta, dtype) / count.astype(dtype) ** _tree.cast_scalar(gamma, dtype)
        )
        raw = jax.lax.bitcast_convert_type(state.rng_key, jnp.uint32)
        rng_key, sample_key = jax.random.split(jax.random.wrap_key_data(raw, impl=impl))
        treedef = jax.tree.structure(updates)
        leaf_keys = jax.random.split(sample_key, treedef.num_leaves)

        def leaf(u, k):
            out = _tree.compute_dtype(u.dtype)
            noise = jax.random.normal(k, u.shape, out)
            return u.astype(out) + _tree.cast_scalar(scale, out) * noise

        noisy = treedef.unflatten(
            [leaf(u, leaf_keys[i]) for i, u in enumerate(treedef.flatten_up_to(updates))]
        )
        new_bits = jax.lax.bitcast_convert_type(jax.random.key_data(rng_key), jnp.int32)
        return noisy, AddNoiseState(count, new_bits)

    return GradientTransformation(init_fn, update_fn)
