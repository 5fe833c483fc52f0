"""Differential privacy (DP-SGD): per-example clipping, and noise on the clipped sum.

The transformations here take *per-example* gradients: every leaf has a leading batch axis
(``jax.vmap(jax.grad(loss), in_axes=(None, 0))(params, batch)``) and the updates they return
have the params' shapes.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _tree, _validate
from gradxform._base import GradientTransformation, chain, expect_state, identity
from gradxform.transforms.momentum import trace
from gradxform.transforms.noise import as_key
from gradxform.transforms.scaling import scale_by_learning_rate


def _check_batch_axis(who: str, grads: Any) -> None:
    leaves = jax.tree.leaves(grads)
    sizes = {jnp.shape(g)[0] if jnp.ndim(g) else None for g in leaves}
    if not leaves or None in sizes or len(sizes) != 1:
        raise ValueError(
            f"{who}: expects per-example gradients, every leaf with the same leading batch "
            f"axis; got shapes {jax.tree.map(jnp.shape, grads)}"
        )


def per_example_global_norm_clip(grads: Any, l2_norm_clip: Any) -> tuple[Any, jax.Array]:
    """Clips each example's gradient to a global norm, then sums over the batch (Optax's).

    With ``g_i`` example ``i``'s gradient (all leaves)::

        c_i = min(1, l2_norm_clip / ||g_i||)   (1 where ||g_i|| = 0)
        out = sum_i c_i * g_i

    Args:
      grads: per-example gradients (a leading batch axis on every leaf).
      l2_norm_clip: the largest norm of one example's gradient.

    Returns:
      ``(the clipped sum, the number of examples clipped)``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> grads = [jnp.array([[3.0, 4.0], [0.3, 0.4]])]  # norms 5 and 0.5
      >>> total, clipped = gx.per_example_global_norm_clip(grads, 1.0)
      >>> [round(x, 4) for x in total[0].tolist()], int(clipped)  # 0.2 * (3, 4) + (0.3, 0.4)
      ([0.9, 1.2], 1)
    """
    _check_batch_axis("per_example_global_norm_clip", grads)
    norms = jax.vmap(lambda g: jnp.sqrt(_tree.tree_squared_norm(g)))(grads)
    multipliers = jnp.nan_to_num(jnp.minimum(l2_norm_clip / norms, 1.0), nan=1.0)
    num_clipped = jnp.sum(multipliers < 1.0)
    clipped = jax.tree.map(lambda g: jnp.tensordot(multipliers.astype(g.dtype), g, axes=1), grads)
    return clipped, num_clipped


def per_example_layer_norm_clip(
    grads: Any, global_l2_norm_clip: Any, uniform: bool = True
) -> tuple[Any, Any]:
    """Clips each example's gradient leaf by leaf, then sums over the batch (Optax's).

    Leaf ``l`` of each example is clipped to ``C_l`` (see :func:`per_example_global_norm_clip`
    for one leaf), with ``C = global_l2_norm_clip``, ``L`` leaves and ``n_l`` elements per
    example in leaf ``l``::

        C_l = C / sqrt(L)   (uniform)   or   C * sqrt(n_l / sum_l n_l)

    so that the whole gradient's norm is at most ``C``.

    Args:
      grads: per-example gradients (a leading batch axis on every leaf).
      global_l2_norm_clip: ``C``.
      uniform: the same bound for every leaf, or bounds proportional to the leaves' sizes.

    Returns:
      ``(the clipped sums, the numbers of examples clipped)``, two trees like ``grads``.

    Example:
      >>> import jax, jax.numpy as jnp, gradxform as gx
      >>> grads = [jnp.array([[3.0, 4.0]]), jnp.array([[0.5]])]  # one example, two leaves
      >>> clip = jax.jit(gx.per_example_layer_norm_clip)  # one compile
      >>> total, clipped = clip(grads, jnp.sqrt(2.0))  # C_l = sqrt(2) / sqrt(2 leaves) = 1
      >>> [[round(x, 4) for x in t.tolist()] for t in total], [int(c) for c in clipped]
      ([[0.6, 0.8], [0.5]], [1, 0])
    """
    who = "per_example_layer_norm_clip"
    _validate.boolean(who, "uniform", uniform)
    _check_batch_axis(who, grads)
    leaves, treedef = jax.tree.flatten(grads)
    if uniform:
        bounds = [global_l2_norm_clip * (1.0 / len(leaves)) ** 0.5 for _ in leaves]
    else:
        total = sum(g[0].size for g in leaves)
        bounds = [global_l2_norm_clip * (g[0].size / total) ** 0.5 for g in leaves]
    pairs = [per_example_global_norm_clip(g, c) for g, c in zip(leaves, bounds, strict=True)]
    return (
        jax.tree.unflatten(treedef, [p[0] for p in pairs]),
        jax.tree.unflatten(treedef, [p[1] for p in pairs]),
    )


class DifferentiallyPrivateAggregateState(NamedTuple):
    """``rng_key``: the key the next noise is drawn from.

    Example:
      >>> import jax, jax.numpy as jnp, gradxform as gx
      >>> state = gx.differentially_private_aggregate(1.0, 0.5, key=0).init(jnp.zeros(2))
      >>> type(state).__name__, jax.random.key_data(state.rng_key).tolist()  # key(0)'s data
      ('DifferentiallyPrivateAggregateState', [0, 0])
    """

    rng_key: jax.Array


def differentially_private_aggregate(
    l2_norm_clip: float, noise_multiplier: float, key: Any = None, *, seed: int | None = None
) -> GradientTransformation:
    """The DP-SGD aggregation (Abadi et al., 2016): clip per example, sum, add noise, average.

    With a batch of ``B`` per-example gradients ``g_i``, ``C = l2_norm_clip`` and
    ``sigma = noise_multiplier``::

        u = (sum_i min(1, C / ||g_i||) g_i + C * sigma * N(0, I)) / B

    The noise of each leaf comes from its own key, split from the state's key as Optax does
    (``new_key, k_1, ..., k_L = split(key, L + 1)``), so that the same key gives Optax's numbers.

    Args:
      l2_norm_clip: ``C``, the largest norm of one example's gradient (>= 0).
      noise_multiplier: ``sigma``, the noise's standard deviation relative to ``C`` (>= 0).
      key: a PRNG key or an int seed (0 when neither it nor ``seed`` is given).
      seed: an int seed, Optax's older name; give one of the two.

    Returns:
      A transformation whose state is :class:`DifferentiallyPrivateAggregateState`; its
      ``update`` takes per-example gradients (a leading batch axis on every leaf).

    References:
      Abadi et al., *Deep Learning with Differential Privacy*, 2016
      (https://arxiv.org/abs/1607.00133).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt = gx.differentially_private_aggregate(l2_norm_clip=1.0, noise_multiplier=0.0)
      >>> per_example = jnp.array([[3.0, 4.0], [0.3, 0.4]])  # norms 5 (clipped to 1) and 0.5
      >>> [round(u, 4) for u in opt.update(per_example, opt.init(jnp.zeros(2)))[0].tolist()]
      [0.45, 0.6]
    """
    who = "differentially_private_aggregate"
    _validate.non_negative(who, "l2_norm_clip", l2_norm_clip)
    _validate.non_negative(who, "noise_multiplier", noise_multiplier)
    if seed is not None:
        if key is not None:
            raise TypeError(f"{who}: give `key` or `seed`, not both")
        _validate.count(who, "seed", seed, minimum=0, maximum=2**63 - 1)
        key = seed
    rng_key = as_key(who, 0 if key is None else key)
    noise_std = l2_norm_clip * noise_multiplier

    def init_fn(params):
        del params
        return DifferentiallyPrivateAggregateState(jnp.array(rng_key, copy=True))

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        expect_state(who, state, DifferentiallyPrivateAggregateState)
        _check_batch_axis(who, updates)
        leaves, treedef = jax.tree.flatten(updates)
        if params is not None:
            expected = [jnp.shape(p) for p in treedef.flatten_up_to(params)]
            if [jnp.shape(g)[1:] for g in leaves] != expected:
                raise ValueError(
                    f"{who}: per-example gradients must have the params' shapes after the "
                    f"batch axis; got {[jnp.shape(g) for g in leaves]} for params {expected}"
                )
        batch = leaves[0].shape[0]
        clipped, _ = per_example_global_norm_clip(leaves, l2_norm_clip)
        new_key, *keys = jax.random.split(state.rng_key, len(leaves) + 1)
        noised = [
            (g + noise_std * jax.random.normal(k, g.shape, g.dtype)) / batch
            for g, k in zip(clipped, keys, strict=True)
        ]
        return jax.tree.unflatten(treedef, noised), DifferentiallyPrivateAggregateState(new_key)

    return GradientTransformation(init_fn, update_fn)


def dpsgd(
    learning_rate: Any,
    l2_norm_clip: float,
    noise_multiplier: float,
    seed: int,
    momentum: float | None = None,
    nesterov: bool = False,
) -> GradientTransformation:
    """DP-SGD (Abadi et al., 2016): SGD on :func:`differentially_private_aggregate`'s updates.

    ::

        g = differentially_private_aggregate(C, sigma, seed)(per-example gradients)
        b_t = momentum * b_{t-1} + g   (with momentum)
        p <- p - learning_rate * (b_t, or g + momentum * b_t with nesterov, or g)

    The momentum is :func:`gradxform.trace` (Optax's numbers: without dampening the buffer
    that starts as ``g_1`` equals Optax's that starts at 0).

    Args:
      learning_rate: the step size, a number or a schedule.
      l2_norm_clip: the largest norm of one example's gradient.
      noise_multiplier: the noise's standard deviation relative to ``l2_norm_clip``.
      seed: the int seed of the noise.
      momentum: ``None`` (no momentum) or the momentum's decay in [0, 1).
      nesterov: Nesterov momentum.

    Returns:
      The optimizer; its ``update`` takes per-example gradients.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt = gx.dpsgd(0.1, l2_norm_clip=1.0, noise_multiplier=0.0, seed=0)
      >>> per_example = jnp.array([[3.0, 4.0], [0.3, 0.4]])
      >>> updates, _ = opt.update(per_example, opt.init(jnp.zeros(2)))
      >>> [round(u, 4) for u in updates.tolist()]  # -lr * the aggregate
      [-0.045, -0.06]
    """
    who = "dpsgd"
    _validate.learning_rate(who, learning_rate)
    if momentum is not None:
        _validate.probability(who, "momentum", momentum)
    _validate.boolean(who, "nesterov", nesterov)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"{who}: `seed` must be an int, got {seed!r}")
    return chain(
        differentially_private_aggregate(l2_norm_clip, noise_multiplier, seed=seed),
        trace(momentum, nesterov=nesterov) if momentum is not None else identity(),
        scale_by_learning_rate(learning_rate),
    )
