"""``_stacking.LeafLayout``: ``jax.tree.map``'s numbers; stacked, one computation per shape."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxpr_counts import count

import gradxform as gx
from benchmarks.matrix_compile import hlo_size
from gradxform._stacking import LeafLayout, columns, runtime_positions


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


def _mapped(fn, tree, *rest, stacked):
    """``fn`` over the leaves of ``tree`` (and the matching subtrees of ``rest``) by a
    ``LeafLayout``: units in, units out, back to a tree."""
    layout = LeafLayout(tree, stacked=stacked)
    return layout.tree(layout.map(fn, layout.units(tree), *(layout.units(r) for r in rest)))


def test_units_map_and_tree_give_tree_maps_numbers():
    tree = _tree(3, shapes=((4, 4), (6, 6)))
    scales = jax.tree.map(lambda x: jnp.float32(x.shape[0]), tree)
    expected = jax.tree.map(lambda x, s: (jnp.linalg.eigh(x)[0] * s, x.sum()), tree, scales)
    for stacked in (True, False):
        got = _mapped(
            lambda x, s: (jnp.linalg.eigh(x)[0] * s, x.sum()), tree, scales, stacked=stacked
        )
        assert jax.tree.structure(got) == jax.tree.structure(expected)
        for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
            np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)


def test_the_rest_passes_subtrees_per_leaf():
    tree = {"a": jnp.ones((2, 2)), "b": jnp.ones((2, 2))}
    state = {"a": (jnp.zeros(2), jnp.float32(1.0)), "b": (jnp.ones(2), jnp.float32(2.0))}
    got = _mapped(lambda x, s: x.sum(0) * s[1] + s[0], tree, state, stacked=True)
    np.testing.assert_array_equal(got["a"], [2.0, 2.0])
    np.testing.assert_array_equal(got["b"], [5.0, 5.0])


def test_groups_by_shape_and_dtype_in_the_order_of_their_first_leaf():
    tree = [
        jnp.ones((3,), jnp.float32),
        jnp.ones((2, 2)),
        jnp.ones((3,), jnp.bfloat16),
        jnp.ones((3,), jnp.float32),
    ]
    layout = LeafLayout(tree, stacked=True)
    assert layout.groups == ((0, 3), (1,), (2,))
    assert [u.shape for u in layout.units(tree)] == [(2, 3), (1, 2, 2), (1, 3)]
    got = _mapped(lambda x: x * 2, tree, stacked=True)
    assert [x.dtype for x in got] == [jnp.float32, jnp.float32, jnp.bfloat16, jnp.float32]
    jaxpr = jax.make_jaxpr(lambda t: _mapped(lambda x: x * 2, t, stacked=True))(tree).jaxpr
    assert count(jaxpr, "mul") == 3
    # A state field: the tuple of stacks, read back as units.
    assert layout.state_units(layout.state(layout.units(tree)))[0].shape == (2, 3)


def test_one_computation_per_distinct_shape_not_per_layer():
    for shapes, expected in [(((8, 8),), 1), (((8, 8), (16, 16)), 2)]:
        tree = _tree(48, shapes)
        jaxpr = jax.make_jaxpr(lambda t: _mapped(_eigenvalues, t, stacked=True))(tree).jaxpr
        assert count(jaxpr, "eigh") == expected
        per_leaf = jax.make_jaxpr(lambda t: _mapped(_eigenvalues, t, stacked=False))(tree)
        assert count(per_leaf.jaxpr, "eigh") == 48 * len(shapes)


def test_a_leaf_alone_gives_the_numbers_it_gives_in_a_group():
    tree = _tree(4)
    alone = _mapped(_eigenvalues, tree["layer2"], stacked=True)
    grouped = _mapped(_eigenvalues, tree, stacked=True)["layer2"]
    np.testing.assert_array_equal(alone[0], grouped[0])


def test_a_stacked_field_of_other_shapes_is_refused_naming_both_sides():
    tree = {"a": jnp.ones((2, 3)), "b": jnp.ones((2, 3)), "c": jnp.ones(4)}
    layout = LeafLayout(tree, stacked=True)
    field = (jnp.zeros((3, 2, 3)), jnp.zeros((1, 4)))
    with pytest.raises(
        ValueError, match=r"opt: the state's moment .*\[\(2, 2, 3\), \(1, 4\)\].*\(3, 2, 3\)"
    ):
        layout.checked_units("opt", field, "moment", tree)
    with pytest.raises(ValueError, match="stack_by_shape=False"):
        layout.checked_units("opt", tree, "moment", tree)
    assert (
        len(layout.checked_units("opt", (jnp.zeros((2, 2, 3)), jnp.zeros((1, 4))), "m", tree)) == 2
    )


def test_empty_tree():
    for stacked in (True, False):
        layout = LeafLayout({}, stacked=stacked)
        assert layout.tree(layout.map(lambda x: x, layout.units({}))) == {}
    assert columns([], 3) == [[], [], []]


def _layer_fn(x, s):
    return jnp.tanh(x @ x.T) * s + x, x.sum(0) * s


def test_runtime_positions_count_from_zero():
    positions = jax.jit(lambda: runtime_positions(5))()
    assert [int(p) for p in positions] == [0, 1, 2, 3, 4]
    assert runtime_positions(1)[0].dtype == jnp.int32 and runtime_positions(0) == ()


def test_stacked_program_compiles_the_same_kernels_at_any_depth():
    # The property that keeps compile time from growing with depth: 12 and 24 layers compile
    # to the same set of distinct kernels (24 layers add copies of them, not new ones), as each
    # leaf is read out of its stack at a runtime position. With x[i] (a constant i) every
    # kernel of this program is distinct: measured 12, 25 and 49 at 4, 12 and 24 layers. At 4
    # layers XLA fuses the small program differently (measured 8 distinct, 5 from 12 on).
    distinct = {}
    for layers in (4, 12, 24):
        tree = [jnp.full((8, 8), 0.1 * i, jnp.float32) for i in range(layers)]
        scales = [jnp.float32(i) for i in range(layers)]
        step = jax.jit(lambda t, s: _mapped(_layer_fn, t, s, stacked=True))
        compiled = step.lower(tree, scales).compile()
        size = hlo_size(compiled.as_text())
        fused, distinct[layers] = size["fused_kernels"], size["distinct_fused_kernels"]
        assert fused >= 2 * layers
        # The same numbers as leaf by leaf, bit for bit (one leaf's computation does not see
        # the others').
        got = compiled(tree, scales)
        expected = jax.jit(lambda t, s: _mapped(_layer_fn, t, s, stacked=False))(tree, scales)
        for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
            np.testing.assert_array_equal(g, e)
    assert distinct[24] == distinct[12] <= distinct[4], distinct


def test_soap_stacked_compiles_no_new_kernels_with_depth():
    # SOAP's whole step (moments, factors, the switch that refreshes the bases), stacked: 6
    # layers compile no more distinct kernels than 3; each constant-offset slice would add one
    # per leaf. (Its numbers against leaf by leaf: tests/test_stacked_state.py.)
    distinct = {}
    opt = gx.soap(precondition_frequency=2, stack_by_shape=True)
    for layers in (6, 3):
        keys = jax.random.split(jax.random.key(1), layers)
        params = {f"layer{i}": jax.random.normal(k, (4, 3)) for i, k in enumerate(keys)}
        compiled = jax.jit(opt.update).lower(params, opt.init(params), params).compile()
        distinct[layers] = hlo_size(compiled.as_text())["distinct_fused_kernels"]
    assert distinct[6] <= distinct[3], distinct
