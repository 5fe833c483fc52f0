"""Tests of gradxform.flat: flatten_params and FlatLayout (flatten, unflatten, mask).

The reference everywhere is the plain tree path: the same optimizer run on the parameter tree.
Every transformation here works element by element, and the flat path applies exactly the same
per-element operations in the same dtypes, only on concatenated buffers, so the results must be
equal bit for bit (``np.array_equal`` on the raw values, dtypes and shapes checked too; a
failure reports the largest difference in ulps). The one exception is a global-norm clip, whose
reduction sums the same squares in another order; it has its own test with a justified
tolerance.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import gradxform as gx

NUM_STEPS = 5

# Matrices, vectors, a 3-d kernel, a scalar and a 0-size leaf, in a dict holding a list.
SHAPES = {
    "w": (4, 3),
    "b": (3,),
    "s": (),
    "empty": (0, 3),
    "blocks": [{"k": (2, 3, 2), "g": (5,)}, {"k": (3, 3, 1), "g": (1,)}],
}
# In the mixed-precision tree these leaves are bfloat16, the others float32.
BF16_LEAVES = {"b", "k"}


def _is_shape(x):
    return isinstance(x, tuple) and all(isinstance(n, int) for n in x)


def _tree_of(shapes, fn):
    """``fn(path, shape)`` at every shape of ``shapes``."""
    return jax.tree_util.tree_map_with_path(fn, shapes, is_leaf=_is_shape)


def _leaf_dtype(path, precision):
    if precision == "float64":
        return jnp.float64
    if precision == "mixed" and getattr(path[-1], "key", None) in BF16_LEAVES:
        return jnp.bfloat16
    return jnp.float32


def _random_tree(shapes, seed, precision, scale=1.0):
    rng = np.random.default_rng(seed)

    def leaf(path, shape):
        values = scale * rng.normal(size=shape)
        return jnp.asarray(values, _leaf_dtype(path, precision))

    return _tree_of(shapes, leaf)


def _gradient_sequence(shapes, precision, steps=NUM_STEPS, seed=100):
    """``steps`` different gradient trees stacked on a leading axis.

    The scale changes from step to step (0.05 to 20) and step 3 has exact zeros in every
    leaf, so that moments grow, shrink and see sign changes, and clipping engages on some steps
    and not on others.
    """
    scales = [1.0, 20.0, 0.05, 3.0, 0.5]
    trees = []
    for k in range(steps):
        tree = _random_tree(shapes, seed + k, precision, scales[k % len(scales)])
        if k == 3:
            tree = jax.tree.map(lambda g: g.at[..., :1].set(0) if g.ndim else g, tree)
        trees.append(tree)
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


# --- comparisons -------------------------------------------------------------------------------


def _ulps(a: np.ndarray, b: np.ndarray) -> int:
    """The largest distance between ``a`` and ``b`` in units in the last place of their dtype."""
    int_type = {2: np.int16, 4: np.int32, 8: np.int64}[a.dtype.itemsize]

    def ordered(x):
        bits = np.ascontiguousarray(x).view(int_type).astype(np.int64)
        return np.where(bits < 0, np.iinfo(int_type).min - bits, bits)

    return int(np.max(np.abs(ordered(a) - ordered(b)), initial=0))


def _assert_bitwise(got, expected, what=""):
    """Same structure, and every leaf has the same dtype, shape and values."""
    got_def, expected_def = jax.tree.structure(got), jax.tree.structure(expected)
    assert got_def == expected_def, f"{what}: structure {got_def} != {expected_def}"
    for (path, g), e in zip(
        jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(expected), strict=True
    ):
        g, e = np.asarray(g), np.asarray(e)
        where = f"{what}{jax.tree_util.keystr(path)}"
        assert (g.dtype, g.shape) == (e.dtype, e.shape), f"{where}: {g.dtype}{g.shape} vs {e}"
        if not np.array_equal(g, e):
            pytest.fail(f"{where}: values differ, by up to {_ulps(g, e)} ulps")


def _unflatten_state(layout, state):
    """A flat-path state with each dict of buffers (a moment) viewed as the params' tree."""

    def is_buffers(x):
        return isinstance(x, dict) and x.keys() == layout.sizes.keys()

    return jax.tree.map(
        lambda x: layout.unflatten(x) if is_buffers(x) else x, state, is_leaf=is_buffers
    )


# --- the two paths -----------------------------------------------------------------------------


def _history(opt, params, grads_seq, layout=None):
    """Params and state after each step of ``opt`` fed ``grads_seq`` (stacked), as a scan.

    With ``layout`` the params are the flat buffers and each gradient tree is flattened before
    the update; the returned history is viewed as the tree again (``unflatten`` keeps the
    leading step axis of the stacked buffers).
    """
    if layout is not None:
        params = layout.flatten(params)

    def step(carry, grads):
        params, state = carry
        if layout is not None:
            grads = layout.flatten(grads)
        updates, state = opt.update(grads, state, params)
        carry = (gx.apply_updates(params, updates), state)
        return carry, carry

    _, (params_hist, state_hist) = jax.lax.scan(step, (params, opt.init(params)), grads_seq)
    if layout is not None:
        return layout.unflatten(params_hist), _unflatten_state(layout, state_hist)
    return params_hist, state_hist


def _schedule(count):
    return 0.05 * 0.8**count


OPTIMIZERS = {
    "sgd": lambda: gx.sgd(0.1),
    "sgd_momentum": lambda: gx.sgd(0.1, momentum=0.9),
    "sgd_nesterov": lambda: gx.sgd(0.1, momentum=0.9, nesterov=True),
    "sgd_dampening": lambda: gx.sgd(0.1, momentum=0.9, dampening=0.3),
    "sgd_weight_decay": lambda: gx.sgd(0.1, momentum=0.5, weight_decay=0.01),
    "adagrad_lr_decay": lambda: gx.adagrad(
        0.1, lr_decay=0.05, weight_decay=0.01, initial_accumulator_value=0.1
    ),
    "rmsprop": lambda: gx.rmsprop(0.01),
    "rmsprop_centered_momentum": lambda: gx.rmsprop(
        0.01, centered=True, momentum=0.9, weight_decay=0.01
    ),
    "adam": lambda: gx.adam(0.01),
    "adam_mu_bf16": lambda: gx.adam(0.01, weight_decay=0.01, mu_dtype=jnp.bfloat16),
    "amsgrad": lambda: gx.amsgrad(0.01),
    "adamw": lambda: gx.adamw(0.01, weight_decay=0.1),
    "adamax": lambda: gx.adamax(0.01, weight_decay=0.01),
    "nadam": lambda: gx.nadam(0.01, weight_decay=0.01),
    "nadam_decoupled": lambda: gx.nadam(0.01, weight_decay=0.1, decoupled_weight_decay=True),
    "lion": lambda: gx.lion(0.001, weight_decay=0.1),
    "clip_adam_schedule": lambda: gx.chain(
        gx.clip(0.5), gx.scale_by_adam(), gx.scale_by_learning_rate(_schedule)
    ),
}


@pytest.mark.parametrize("precision", ["float32", "mixed", "float64"])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_flat_path_equals_tree_path_bit_for_bit(name, precision, request):
    if precision == "float64":
        request.getfixturevalue("x64")
    opt = OPTIMIZERS[name]()
    params = _random_tree(SHAPES, 0, precision)
    grads_seq = _gradient_sequence(SHAPES, precision)
    flat, layout = gx.flatten_params(params)
    expected_keys = {"mixed": {"float32", "bfloat16"}}.get(precision, {precision})
    assert set(flat) == expected_keys

    run = jax.jit(lambda p, g: (_history(opt, p, g), _history(opt, p, g, layout)))
    (tree_params, tree_state), (flat_params, flat_state) = run(params, grads_seq)
    for k in range(NUM_STEPS):
        at = functools.partial(jax.tree.map, lambda x, k=k: x[k])
        _assert_bitwise(at(flat_params), at(tree_params), f"{name} step {k + 1} params")
        # The moments (and counters) of the flat state, each dict of buffers unflattened.
        _assert_bitwise(at(flat_state), at(tree_state), f"{name} step {k + 1} state")
    # The comparison means something only if the params moved (the 0-size leaf cannot).
    moved = jax.tree.map(lambda x, p: bool(np.any(np.asarray(x[-1] != p))), tree_params, params)
    moved["empty"] = True
    assert all(jax.tree.leaves(moved)), moved


# A global-norm clip reduces the squares of all elements to one number: per leaf and then
# across leaves on the tree, in one reduction over each buffer on the flat path. The same terms
# summed in another order give norms that may differ in the last bits (float32 summation of n
# terms is good to ~log2(n) ulps with pairwise/vectorised sums; 45 terms here), so the clip
# factor may differ by a few ulps and each update with it. Momentum SGD passes that relative
# error straight through (no normalisation hides it): after 5 steps every coordinate of
# ``p - p0`` is a sum of 5 updates, each off by a few ulps relative. rtol=2e-6 (~16 ulps of
# float32) covers that with margin while a wrong norm (a missing leaf or buffer) is off by
# percents; atol covers coordinates whose updates nearly cancel (|p - p0| tiny; the updates are
# O(0.1), so a few ulps of them is ~1e-8).
CLIP_RTOL = 2e-6
CLIP_ATOL = 1e-7


@pytest.mark.parametrize("precision", ["float32", "mixed"])
def test_global_norm_clip_equals_tree_path_to_a_few_ulps(precision):
    opt = gx.chain(
        gx.clip_by_global_norm(0.5), gx.trace(0.9), gx.scale_by_learning_rate(0.1)
    )
    params = _random_tree(SHAPES, 0, precision)
    grads_seq = _gradient_sequence(SHAPES, precision)
    _, layout = gx.flatten_params(params)
    run = jax.jit(lambda p, g: (_history(opt, p, g), _history(opt, p, g, layout)))
    (tree_params, tree_state), (flat_params, flat_state) = run(params, grads_seq)
    assert jax.tree.structure(flat_state) == jax.tree.structure(tree_state)
    for path, got in jax.tree_util.tree_leaves_with_path(flat_params):
        expected = functools.reduce(lambda t, key: t[key.key if hasattr(key, "key") else key.idx],
                                    path, tree_params)
        start = functools.reduce(lambda t, key: t[key.key if hasattr(key, "key") else key.idx],
                                 path, params)
        assert got.dtype == expected.dtype
        if got.dtype == jnp.bfloat16:
            # bf16 params: both paths round the float32 results to 8 bits, where ulp-level
            # differences of the clip factor vanish unless a value sits on a rounding boundary;
            # allow one bf16 ulp.
            assert _ulps(np.asarray(got), np.asarray(expected)) <= 1, path
            continue
        np.testing.assert_allclose(
            np.asarray(got - start[None]),
            np.asarray(expected - start[None]),
            rtol=CLIP_RTOL,
            atol=CLIP_ATOL,
            err_msg=jax.tree_util.keystr(path),
        )
