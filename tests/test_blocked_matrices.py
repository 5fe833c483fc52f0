"""Tests of gradxform.blocked_matrices and the ``block_size`` of ``soap`` and ``shampoo``.

The reference for a blocked step is the unblocked optimizer run on each block on its own (a
separate ``init`` and ``update`` per block, the blocks cut by the slices written here), with
the results written back into place: blocking must be that and nothing else.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxpr_counts import count

import gradxform as gx

# Block size 2: "w" is cut into 2 + 1 rows, "t" along its leading axis (2 + 1); "v" (a
# vector) and "s" (no axis longer than 2) are not cut. (Remainders along both axes of a
# matrix: the state and element-wise tests below.)
SHAPES = {"w": (3, 2), "t": (3, 2, 1), "v": (5,), "s": (2, 2)}
BLOCK = 2
CUT = {
    "w": [(slice(0, 2), slice(0, 2)), (slice(2, 3), slice(0, 2))],
    "t": [(slice(0, 2), slice(0, 2), slice(0, 1)), (slice(2, 3), slice(0, 2), slice(0, 1))],
}


def _tree(seed):
    rng = np.random.default_rng(seed)
    return {name: jnp.asarray(rng.normal(size=shape)) for name, shape in SHAPES.items()}


def _steps(blocked, reference, params, grads):
    """The updates of ``len(grads)`` steps of ``blocked`` on ``params`` and of ``reference`` on
    the same params cut into blocks (the params moving by the updates), and the last states;
    one jitted step for both, traced once (the step with the expensive refresh included)."""
    traces = []

    @jax.jit
    def step(params, states, g):
        traces.append(None)
        out = []
        for optimizer, p, state, x in zip((blocked, reference), params, states, g, strict=True):
            u, state = optimizer.update(x, state, p)
            out.append((gx.apply_updates(p, u), state, u))
        return tuple(zip(*out, strict=True))

    params = (params, _cut(params))
    states = jax.jit(lambda p: (blocked.init(p[0]), reference.init(p[1])))(params)
    updates = []
    for g in grads:
        params, states, u = step(params, states, (g, _cut(g)))
        updates.append(u)
    assert len(traces) == 1
    return updates, states


def _cut(tree):
    """``tree`` with the leaves of CUT replaced by their blocks, cut by the slices above."""
    return {k: tuple(v[i] for i in CUT[k]) if k in CUT else v for k, v in tree.items()}


def _paste(tree):
    """The inverse of :func:`_cut`: each block written back into its place."""
    out = dict(tree)
    for k, blocks in tree.items():
        if k in CUT:
            whole = np.zeros(SHAPES[k])
            for index, block in zip(CUT[k], blocks, strict=True):
                whole[index] = block
            out[k] = whole
    return out


OPTIMIZERS = {
    # Coupled decay (params enter the direction) and momentum (the state carries a block's
    # previous direction).
    "shampoo": lambda **kw: gx.shampoo(0.1, momentum=0.5, weight_decay=0.01, **kw),
    # The bases are gathered on step 1 and refreshed on steps 2 and 3.
    "soap": lambda **kw: gx.soap(0.1, precondition_frequency=1, **kw),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_a_blocked_step_is_the_optimizer_run_on_each_block(x64, name):
    # The reference is the unblocked optimizer on a tree whose leaves are the blocks, cut here:
    # each block is a leaf of its own, with its own factors, moments and decompositions, which
    # for these per-leaf optimizers is each block run on its own. "v" and "s" are in it as
    # they are: the unblocked optimizer on them.
    make = OPTIMIZERS[name]
    params = _tree(0)
    grads = [_tree(k) for k in range(1, 4)]
    updates, (state, reference_state) = _steps(make(block_size=BLOCK), make(), params, grads)
    for step, (u, r) in enumerate(updates):
        r = _paste(r)
        for leaf in CUT:
            np.testing.assert_allclose(u[leaf], r[leaf], rtol=1e-12, atol=0, err_msg=f"{step}")
        # The leaves that are not cut: the unblocked optimizer's numbers, bit for bit.
        for leaf in ("v", "s"):
            np.testing.assert_array_equal(u[leaf], r[leaf])
    assert np.abs(updates[-1][0]["w"]).min() > 0
    chex.assert_trees_all_close(state[0].inner_state, reference_state[0], rtol=1e-12, atol=0)


def test_state_holds_one_entry_per_block_each_factor_at_most_block_size():
    shapes = {"w": (5, 4), "t": (3, 4, 5), "v": (7,), "s": (3, 2)}
    params = {name: jnp.ones(shape) for name, shape in shapes.items()}
    state = jax.eval_shape(gx.shampoo(block_size=3).init, params)[0].inner_state
    w = state.statistics["w"]
    assert [tuple(f.shape for f in block) for block in w] == [
        ((3, 3), (3, 3)),
        ((3, 3), (1, 1)),
        ((2, 2), (3, 3)),
        ((2, 2), (1, 1)),
    ]
    assert [f.shape for f in state.statistics["t"][3]] == [(3, 3), (1, 1), (2, 2)]
    assert len(state.statistics["t"]) == 4
    # Not cut: the vector keeps its 7 x 7 factor (Shampoo preconditions vectors whole).
    assert [f.shape for f in state.statistics["v"]] == [(7, 7)]
    assert [f.shape for f in state.statistics["s"]] == [(3, 3), (2, 2)]
    assert state.momentum["w"][3].shape == (2, 1)
    assert max(max(f.shape) for f in jax.tree.leaves(state.statistics["t"])) <= 3


def test_soap_with_blocks_never_has_a_factor_larger_than_block_size():
    # merge_dims would merge a (4, 6, 6) block's axes into one of 144 under the default
    # max_precond_dim; the bound is min(max_precond_dim, block_size).
    params = {"t": jnp.ones((4, 6, 6)), "w": jnp.ones((9, 2)), "v": jnp.ones(10)}
    for flags in ({}, {"merge_dims": True, "precondition_1d": True}):
        unblocked = jax.eval_shape(gx.soap(**flags).init, params)[0]
        assert max(max(f.shape) for f in jax.tree.leaves(unblocked.factors)) > 4
        state = jax.eval_shape(gx.soap(block_size=4, **flags).init, params)[0].inner_state
        sizes = [f.shape for f in jax.tree.leaves(state.factors)]
        assert sizes and max(max(s) for s in sizes) <= 4, sizes
    # With precondition_1d the vector of 10 > 4 follows Adam: no factor.
    assert state.factors["v"] == (None,)


def test_blocks_of_one_shape_share_one_decomposition_when_stacked():
    decompositions = {"eigh", "qr", "householder_product", "geqrf"}
    optimizer = gx.soap(precondition_frequency=2, block_size=4, stack_by_shape=True)

    def update_jaxpr(params):
        state = optimizer.init(params)
        return jax.make_jaxpr(optimizer.update)(params, state, params).jaxpr

    one_block = count(update_jaxpr({"w": jnp.ones((4, 4))}), decompositions)
    # A (12, 8) leaf and a (4, 4) leaf: seven (4, 4) blocks, one batched decomposition.
    seven = count(update_jaxpr({"w": jnp.ones((12, 8)), "s": jnp.ones((4, 4))}), decompositions)
    assert one_block > 0 and seven == one_block


def test_an_elementwise_inner_computes_the_same_numbers_blocked():
    params = {"w": jnp.arange(15.0).reshape(3, 5) / 10, "b": jnp.ones(5)}

    @jax.jit
    def two_steps(params):
        out = []
        for optimizer in (gx.blocked_matrices(gx.adam(0.1), block_size=2), gx.adam(0.1)):
            p, state = params, optimizer.init(params)
            for _ in range(2):
                u, state = optimizer.update(jax.tree.map(jnp.sin, p), state, p)
                p = gx.apply_updates(p, u)
            out.append((p, state))
        return out

    (blocked, state), (plain, _) = two_steps(params)
    chex.assert_trees_all_close(blocked, plain, rtol=1e-6)
    shapes = [(2, 2), (2, 2), (2, 1), (1, 2), (1, 2), (1, 1)]
    assert [m.shape for m in state.inner_state[0].mu["w"]] == shapes
    assert not jnp.allclose(blocked["w"], params["w"])


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: gx.blocked_matrices(gx.sgd(0.1), block_size=0), ValueError, "got 0"),
        (lambda: gx.blocked_matrices(gx.sgd(0.1), block_size=2.5), TypeError, "got 2.5"),
        (lambda: gx.blocked_matrices(gx.sgd(0.1), block_size=None), TypeError, "got None"),
        (lambda: gx.soap(block_size=-1), ValueError, "got -1"),
        (lambda: gx.shampoo(block_size=True), TypeError, "bool True"),
    ],
)
def test_block_size_errors_name_the_function_the_argument_and_the_value(call, error, message):
    with pytest.raises(error) as info:
        call()
    text = str(info.value)
    assert text.split(":")[0] in ("blocked_matrices", "soap", "shampoo"), text
    assert "`block_size`" in text and message in text, text


def test_a_wrong_inner_or_update_is_named():
    with pytest.raises(TypeError, match="blocked_matrices: `inner`: expected a gradient trans"):
        gx.blocked_matrices(gx.sgd, block_size=2)
    optimizer = gx.shampoo(block_size=2)
    params = {"w": jnp.ones((5, 3))}
    state = jax.eval_shape(optimizer.init, params)  # the check comes before any computation
    # Checked whole before blocking: the message names the leaf and both whole shapes.
    with pytest.raises(ValueError, match=r"shampoo: the update at \['w'\] has shape \(5, 4\)"):
        optimizer.update({"w": jnp.ones((5, 4))}, state, params)
