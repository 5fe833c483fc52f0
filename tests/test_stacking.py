"""``_stacking.stacked_map``: ``jax.tree.map``'s numbers; stacked, one computation per shape."""

import jax
import jax.numpy as jnp
import numpy as np
from jaxpr_counts import count

from gradxform._stacking import leaf_by_leaf, stacked_by_shape, stacked_map


def _symmetric(key, n):
    a = jax.random.normal(key, (n, n))
    return a @ a.T


def _eigenvalues(x):
    return jnp.linalg.eigh(x)[0]


def _tree(layers, shapes=((8, 8),)):
    keys = jax.random.split(jax.random.key(0), layers * len(shapes))
    return {
        f"layer{i}": [_symmetric(keys[i * len(shapes) + j], s[0]) for j, s in enumerate(shapes)]
        for i in range(layers)
    }


def test_equals_tree_map_leaf_by_leaf():
    tree = _tree(3, shapes=((4, 4), (6, 6)))
    scales = jax.tree.map(lambda x: jnp.float32(x.shape[0]), tree)
    expected = jax.tree.map(lambda x, s: (jnp.linalg.eigh(x)[0] * s, x.sum()), tree, scales)
    got = stacked_map(lambda x, s: (jnp.linalg.eigh(x)[0] * s, x.sum()), tree, scales, stack=True)
    assert jax.tree.structure(got) == jax.tree.structure(expected)
    for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)


def test_the_rest_passes_subtrees_per_leaf():
    tree = {"a": jnp.ones((2, 2)), "b": jnp.ones((2, 2))}
    state = {"a": (jnp.zeros(2), jnp.float32(1.0)), "b": (jnp.ones(2), jnp.float32(2.0))}
    got = stacked_map(lambda x, s: x.sum(0) * s[1] + s[0], tree, state, stack=True)
    np.testing.assert_array_equal(got["a"], [2.0, 2.0])
    np.testing.assert_array_equal(got["b"], [5.0, 5.0])


def test_one_computation_per_distinct_shape_not_per_layer():
    for shapes, expected in [(((8, 8),), 1), (((8, 8), (16, 16)), 2)]:
        tree = _tree(48, shapes)
        with stacked_by_shape():
            jaxpr = jax.make_jaxpr(lambda t: stacked_map(_eigenvalues, t))(tree).jaxpr
        assert count(jaxpr, "eigh") == expected
        jaxpr = jax.make_jaxpr(lambda t: stacked_map(_eigenvalues, t, stack=True))(tree).jaxpr
        assert count(jaxpr, "eigh") == expected
        # Leaf by leaf: the default, also within stacked_by_shape when asked for explicitly.
        per_leaf = jax.make_jaxpr(lambda t: stacked_map(_eigenvalues, t))(tree)
        assert count(per_leaf.jaxpr, "eigh") == 48 * len(shapes)
        with stacked_by_shape(), leaf_by_leaf():
            per_leaf = jax.make_jaxpr(lambda t: stacked_map(_eigenvalues, t))(tree)
        assert count(per_leaf.jaxpr, "eigh") == 48 * len(shapes)
        with stacked_by_shape():
            per_leaf = jax.make_jaxpr(lambda t: stacked_map(_eigenvalues, t, stack=False))(tree)
        assert count(per_leaf.jaxpr, "eigh") == 48 * len(shapes)


def test_a_leaf_alone_gives_the_numbers_it_gives_in_a_group():
    tree = _tree(4)
    alone = stacked_map(_eigenvalues, tree["layer2"], stack=True)
    grouped = stacked_map(_eigenvalues, tree, stack=True)["layer2"]
    np.testing.assert_array_equal(alone[0], grouped[0])


def test_dtypes_are_grouped_apart_and_kept():
    tree = [jnp.ones((3,), jnp.float32), jnp.ones((3,), jnp.bfloat16), jnp.ones((3,), jnp.float32)]
    got = stacked_map(lambda x: x * 2, tree, stack=True)
    assert [x.dtype for x in got] == [jnp.float32, jnp.bfloat16, jnp.float32]
    jaxpr = jax.make_jaxpr(lambda t: stacked_map(lambda x: x * 2, t, stack=True))(tree).jaxpr
    assert count(jaxpr, "mul") == 2


def test_empty_tree():
    assert stacked_map(lambda x: x, {}) == {}
    assert stacked_map(lambda x: x, {}, stack=True) == {}
