"""Where Optax's utilities reach into a gradxform optimizer: ``tree_map_params`` (how ``jit``
users build a state's shardings), ``apply_updates`` on trees with ``None``, and
``inject_hyperparams`` called without params."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform as gx

optax = pytest.importorskip("optax", reason="Optax is in the `compare` extra")

PARAMS = {"kernel": jnp.ones((3, 2)), "bias": jnp.zeros(2)}
MASK = {"kernel": True, "bias": False}


@pytest.mark.parametrize(
    ("make", "copies"),
    [
        (lambda: gx.masked(gx.adam(0.1), MASK), 2),
        (lambda: gx.masked(gx.adam(0.1), gx.decay_matrices_only), 2),
        (lambda: gx.freeze(MASK, inner=gx.adam(0.1)), 2),
        (lambda: gx.freeze(MASK), 0),
        (
            lambda: gx.multi_transform(
                {"a": gx.adam(0.1), "s": gx.sgd(0.1, momentum=0.9)}, {"kernel": "a", "bias": "s"}
            ),
            3,
        ),
        (lambda: gx.adamw(0.1, mask=MASK), 4),
        (lambda: gx.adamw(0.1, mask=gx.decay_matrices_only), 4),
        (lambda: gx.chain(gx.clip_by_global_norm(1.0), gx.adamw(0.1, mask=MASK)), 4),
    ],
    ids=[
        "masked",
        "masked_fn",
        "freeze_inner",
        "freeze",
        "multi_transform",
        "adamw_mask",
        "adamw_mask_fn",
        "chain",
    ],
)
def test_tree_map_params_reaches_every_copy_of_the_params(make, copies):
    # Optax calls `init` on an empty placeholder node standing for the params, then maps `f`
    # over the state's subtrees found where the placeholder landed. Masks used to reject it.
    opt = make()
    state = opt.init(PARAMS)
    tagged = optax.tree_utils.tree_map_params(
        opt, lambda p: jnp.full_like(p, 7.0), state, transform_non_params=lambda x: x
    )
    assert jax.tree.structure(tagged) == jax.tree.structure(state)
    # Every state leaf that is a param's copy (the moments: a masked one holds the selected
    # leaves only) was reached, and nothing else (counters, flags) was.
    reached = 0
    for old, new in zip(jax.tree.leaves(state), jax.tree.leaves(tagged), strict=True):
        if old.shape in ((3, 2), (2,)):
            np.testing.assert_array_equal(new, np.full(old.shape, 7.0))
            reached += 1
        else:
            np.testing.assert_array_equal(new, old)
    assert reached == copies


def test_tree_map_params_builds_shardings_for_jit():
    # The documented use: a state's shardings from the params' ones.
    mesh = jax.make_mesh((len(jax.devices()),), ("data",))
    spec = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    opt = gx.adamw(0.1, mask=gx.decay_matrices_only)
    state = opt.init(PARAMS)
    shardings = optax.tree_utils.tree_map_params(
        opt,
        lambda _: spec,
        state,
        transform_non_params=lambda _: spec,
        is_leaf=lambda x: isinstance(x, gx.MaskedNode),
    )
    placed = jax.device_put(state, shardings)
    assert jax.tree.structure(placed) == jax.tree.structure(state)


def test_inject_hyperparams_update_without_params_takes_integer_updates():
    # `update(updates, state)` without params: the structure check ran the inner `init` on the
    # updates, which rejected integer leaves (params must be floating); the inner transformation
    # itself takes them, as Optax's does.
    opt = gx.inject_hyperparams(gx.scale)(step_size=2.0)
    state = opt.init({"w": jnp.ones(3)})
    updates, state = opt.update({"w": jnp.arange(3)}, state)
    np.testing.assert_array_equal(updates["w"], [0.0, 2.0, 4.0])
    ref = optax.inject_hyperparams(optax.scale)(step_size=2.0)
    ref_updates, _ = ref.update({"w": jnp.arange(3)}, ref.init({"w": jnp.ones(3)}))
    np.testing.assert_array_equal(updates["w"], ref_updates["w"])


def test_apply_updates_with_none_params_matches_optax():
    params = {"a": None, "b": jnp.ones(2), "c": (None, jnp.zeros(1))}
    updates = {"a": None, "b": jnp.full(2, 0.5), "c": (None, jnp.ones(1))}
    ours = gx.apply_updates(params, updates)
    theirs = optax.apply_updates(params, updates)
    assert jax.tree.structure(ours, is_leaf=lambda x: x is None) == jax.tree.structure(
        theirs, is_leaf=lambda x: x is None
    )
    jax.tree.map(np.testing.assert_array_equal, ours, theirs)


def test_optax_freeze_and_gradxform_freeze_agree():
    # Optax's `freeze(mask)` is a link of a chain: the same numbers as gx.freeze(mask).
    grads = {"kernel": jnp.full((3, 2), 0.5), "bias": jnp.ones(2)}
    ours = gx.chain(gx.freeze(MASK), gx.sgd(0.1))
    theirs = optax.chain(optax.transforms.freeze(MASK), optax.sgd(0.1))
    u_ours, _ = ours.update(grads, ours.init(PARAMS), PARAMS)
    u_theirs, _ = theirs.update(grads, theirs.init(PARAMS), PARAMS)
    jax.tree.map(np.testing.assert_array_equal, u_ours, u_theirs)
    np.testing.assert_array_equal(u_ours["kernel"], np.zeros((3, 2)))
