"""``_stacking.stacked_map``: ``jax.tree.map``'s numbers; stacked, one computation per shape."""

import re

import jax
import jax.numpy as jnp
import numpy as np
from jaxpr_counts import count

import gradxform as gx
from gradxform._stacking import leaf_by_leaf, runtime_positions, stacked_by_shape, stacked_map


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


def _kernels(compiled_text):
    """Fused kernels of an optimized HLO module, and how many are distinct (bodies equal up to
    names and metadata): XLA's CPU backend compiles each distinct one once."""
    bodies, current = {}, None
    for line in compiled_text.splitlines():
        header = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$", line)
        if header and not line.startswith(" "):
            current = bodies.setdefault(header.group(1), [])
        elif line.startswith("}"):
            current = None
        elif current is not None:
            line = re.sub(r", metadata=\{[^}]*\}|backend_config=.*", "", line)
            current.append(re.sub(r"%[\w.\-]+", "%", line.strip()))
    fused = ["\n".join(b) for name, b in bodies.items() if "fused" in name or "fusion" in name]
    return len(fused), len(set(fused))


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
        step = jax.jit(lambda t, s: stacked_map(_layer_fn, t, s, stack=True))
        compiled = step.lower(tree, scales).compile()
        fused, distinct[layers] = _kernels(compiled.as_text())
        assert fused >= 2 * layers
        # The same numbers as leaf by leaf, bit for bit (one leaf's computation does not see
        # the others').
        got = compiled(tree, scales)
        expected = jax.jit(lambda t, s: stacked_map(_layer_fn, t, s, stack=False))(tree, scales)
        for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
            np.testing.assert_array_equal(g, e)
    assert distinct[24] == distinct[12] <= distinct[4], distinct


def test_soap_stacked_compiles_no_new_kernels_with_depth():
    # SOAP's whole step (moments, factors, the switch that refreshes the bases), stacked: 6
    # layers compile no more distinct kernels than 3 (measured 40 at 3 and 6 layers, 37 at 12:
    # small programs fuse differently); each constant-offset slice would add one per leaf.
    distinct, steps = {}, {}
    opt = gx.soap(precondition_frequency=2)
    for layers in (6, 3):
        keys = jax.random.split(jax.random.key(1), layers)
        params = {f"layer{i}": jax.random.normal(k, (4, 3)) for i, k in enumerate(keys)}
        with stacked_by_shape():
            traced = jax.jit(opt.update).trace(params, opt.init(params), params)
        steps[layers] = traced.lower().compile()
        distinct[layers] = _kernels(steps[layers].as_text())[1]
    assert distinct[6] <= distinct[3], distinct
    # The stacked step's numbers are leaf by leaf's over three steps (the eigendecomposition on
    # the first, the power iteration and QR on the third): batched LAPACK calls and products
    # round as single ones here (measured: equal bit for bit).
    per_leaf = jax.jit(opt.update)
    state_s = state_l = opt.init(params)
    for t in range(3):
        grads = jax.tree.map(lambda p, t=t: jnp.sin(p * (t + 1)), params)
        u_s, state_s = steps[3](grads, state_s, params)
        u_l, state_l = per_leaf(grads, state_l, params)
        stacked, leafwise = jax.tree.leaves((u_s, state_s)), jax.tree.leaves((u_l, state_l))
        for a, b in zip(stacked, leafwise, strict=True):
            np.testing.assert_array_equal(a, b)
