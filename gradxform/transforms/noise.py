"""Adding noise to the updates (Neelakantan et al.'s annealed Gaussian gradient noise)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _checks, _tree, _validate
from gradxform._base import GradientTransformation, expect_state
from gradxform._types import StepCount


class AddNoiseState(NamedTuple):
    """``count``: updates made (int32); ``rng_key``: the raw bits (bit-cast to int32) of the key
    the next noise is drawn from; ``jax.random.wrap_key_data(lax.bitcast_convert_type(rng_key,
    jnp.uint32))`` is Optax's key.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.add_noise(0.01, 0.55, seed=0)
      >>> state = tx.init(jnp.zeros(2))
      >>> state.count, state.rng_key  # the raw bits of jax.random.PRNGKey(0)
      (Array(0, dtype=int32), Array([0, 0], dtype=int32))
    """

    count: StepCount
    rng_key: jax.Array


def as_key(who: str, key: Any) -> jax.Array:
    """A typed PRNG key from a key (typed or raw ``uint32[2]``) or an int seed, as Optax's
    ``canonicalize_key``: a raw key array stays as given."""
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    if isinstance(key, bool) or not isinstance(key, int | jax.Array):
        raise TypeError(f"{who}: `key` must be a PRNG key or an int seed, got {key!r}")
    return jax.random.key(key) if isinstance(key, int) else key


def add_noise(eta: float, gamma: float, key: Any = None, *, seed: int | None = None):
    """Adds annealed Gaussian noise to the updates (Neelakantan et al., 2015).

    At the ``t``-th update (from 1)::

        sigma_t = sqrt(eta / t^gamma)
        u <- u + sigma_t * N(0, 1)

    The noise of each leaf comes from its own key, split from ``rng_key`` as Optax does
    (``rng_key, k = split(rng_key)``; one key per leaf from ``split(k, num_leaves)``), so that
    the same key gives Optax's numbers.

    Args:
      eta: the initial variance (>= 0).
      gamma: the decay exponent of the variance (>= 0; 0.55 in the paper).
      key: a PRNG key or an int seed (Optax's; 0 when neither it nor ``seed`` is given).
      seed: Optax's older name for an int ``key``; give one of the two.

    Returns:
      A transformation whose state is :class:`AddNoiseState`.

    References:
      Neelakantan et al., *Adding Gradient Noise Improves Learning for Very Deep Networks*,
      2015 (https://arxiv.org/abs/1511.06807).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx, u = gx.add_noise(0.25, 0.55, seed=0), jnp.zeros(10_000)
      >>> noisy, _ = tx.update(u, tx.init(u))
      >>> round(float(noisy.std()), 2)  # sigma_1 = sqrt(0.25 / 1^0.55)
      0.5
    """
    who = "add_noise"
    _validate.non_negative(who, "eta", eta)
    _validate.non_negative(who, "gamma", gamma)
    if seed is not None:
        if key is not None:
            raise ValueError(f"{who}: give `key` or `seed`, not both (as Optax)")
        _validate.count(who, "seed", seed, minimum=0, maximum=2**63 - 1)
        key = seed
    # The key is kept as its raw bits, bit-cast to int32: a state of plain integer arrays, which
    # dtype checks, NumPy, checkpoints and vmap take as they take counters (a typed key is
    # not a NumPy dtype). Computed eagerly, also when the factory runs inside a trace
    # (inject_hyperparams calls it there).
    with jax.ensure_compile_time_eval():
        typed = as_key(who, 0 if key is None else key)
        if not jnp.issubdtype(typed.dtype, jax.dtypes.prng_key):
            typed = jax.random.wrap_key_data(typed)
        impl = jax.random.key_impl(typed)
        bits = jax.lax.bitcast_convert_type(jax.random.key_data(typed), jnp.int32)

    def init_fn(params):
        del params
        return AddNoiseState(jnp.zeros([], jnp.int32), jnp.array(bits, copy=True))

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        expect_state(who, state, AddNoiseState)
        if params is not None:  # the noise is drawn in each update's (floating) dtype
            _checks.check_updates(who, updates, params, "param")
        count = _tree.safe_increment(state.count)
        raw = jax.lax.bitcast_convert_type(state.rng_key, jnp.uint32)
        next_key, sample_key = jax.random.split(jax.random.wrap_key_data(raw, impl=impl))
        leaves, treedef = jax.tree.flatten(updates)
        keys = jax.random.split(sample_key, len(leaves))

        def leaf(u, k):
            dtype = _tree.compute_dtype(u.dtype)
            t = count.astype(dtype)
            sigma = jnp.sqrt(_tree.cast_scalar(eta, dtype) / t ** _tree.cast_scalar(gamma, dtype))
            noise = jax.random.normal(k, u.shape, u.dtype).astype(dtype)
            return (u.astype(dtype) + sigma * noise).astype(u.dtype)

        noisy = [leaf(u, keys[i]) for i, u in enumerate(leaves)]
        next_bits = jax.lax.bitcast_convert_type(jax.random.key_data(next_key), jnp.int32)
        return jax.tree.unflatten(treedef, noisy), AddNoiseState(count, next_bits)

    return GradientTransformation(init_fn, update_fn)
