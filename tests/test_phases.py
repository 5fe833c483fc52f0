"""Tests of join_transforms: phases of training run one after another in one compiled step."""

import functools
import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform as gx


def _loss(p):
    return jnp.sum((p["w"] - 1.0) ** 2 * jnp.arange(1.0, 5.0)) + jnp.sum(jnp.sin(p["b"]))


def _params():
    return {"w": jnp.asarray([0.3, -1.2, 2.0, 0.5]), "b": jnp.asarray([0.1, -0.4])}


def _phases():
    return [
        gx.adam(0.05),
        gx.sgd(0.02, momentum=0.9),
        gx.chain(gx.scale_by_adam(b1=0.5), gx.scale_by_learning_rate(lambda k: 0.1 / (1 + k))),
    ]


def _by_hand(transforms, lengths, params):
    """Each phase from a fresh state, for its number of steps: the params after every step."""
    trajectory, p = [], params
    for transform, length in zip(transforms, lengths, strict=True):

        @jax.jit
        def step(p, state, transform=transform):
            u, state = transform.update(jax.grad(_loss)(p), state, p)
            return gx.apply_updates(p, u), state

        state = transform.init(p)
        for _ in range(length):
            p, state = step(p, state)
            trajectory.append(p)
    return trajectory


@pytest.mark.parametrize(
    "num_phases, boundaries, steps", [(1, [], 6), (2, [5], 11), (3, [4, 9], 14), (3, [1, 2], 5)]
)
def test_join_equals_the_phases_run_one_after_another(x64, num_phases, boundaries, steps):
    transforms = _phases()[:num_phases]
    opt = gx.join_transforms(transforms, boundaries=boundaries)

    @functools.partial(jax.jit, donate_argnums=(1,))
    @chex.assert_max_traces(n=1)  # the boundaries are crossed without retracing
    def step(p, state):
        u, state = opt.update(jax.grad(_loss)(p), state, p)
        return gx.apply_updates(p, u), state

    p, state = _params(), opt.init(_params())
    got = []
    for _ in range(steps):
        p, state = step(p, state)
        got.append(p)
    # One compilation serves every phase: one trace (chex, above), and one executable.
    assert step._cache_size() == 1
    edges = [0, *boundaries, steps]
    lengths = [b - a for a, b in itertools.pairwise(edges)]
    expected = _by_hand(transforms, lengths, _params())
    for k, (g, e) in enumerate(zip(got, expected, strict=True)):
        for name in e:
            # The active phase runs the same float64 operations as on its own, and the select
            # copies its bits; but fused next to the other phases, XLA may turn a division by
            # a scalar into a multiply by its reciprocal where alone it did not (or the other
            # way), so the trajectories may differ by an ulp or two. Params are O(1): a few
            # ulps of 1 is tight, while any wrong phase or state would be off by >= 1e-4.
            np.testing.assert_allclose(
                g[name], e[name], rtol=0, atol=8 * np.finfo(np.float64).eps, err_msg=f"step {k}"
            )
    assert int(state.count) == steps


def test_only_the_active_phase_state_advances():
    adam, sgd = gx.adam(0.05), gx.sgd(0.02, momentum=0.9)
    opt = gx.join_transforms([adam, sgd], boundaries=[3])
    params = _params()
    state = opt.init(params)
    sgd_init = sgd.init(params)
    adam_state = adam.init(params)
    for k in range(6):
        g = jax.grad(_loss)(params)
        _, state = opt.update(g, state, params)
        if k < 3:
            _, adam_state = adam.update(g, adam_state, params)
            # The second phase still holds its initial state, bit for bit.
            chex.assert_trees_all_equal(state.inner_states[1], sgd_init, strict=True)
        else:
            assert int(state.inner_states[1][0].count) == k - 2
        # The first phase is frozen at its third update once the second takes over.
        chex.assert_trees_all_equal(state.inner_states[0], adam_state, strict=True)
    assert int(state.inner_states[0][0].count) == 3


def test_state_dtypes_are_stable():
    opt = gx.join_transforms([gx.adam(0.1), gx.sgd(0.1, momentum=0.5)], boundaries=[2])
    params = _params()
    state = opt.init(params)
    _, new_state = jax.jit(opt.update)(params, state, params)
    assert jax.tree.map(jax.typeof, state) == jax.tree.map(jax.typeof, new_state)
    assert state.count.dtype == jnp.int32


def test_extra_args_reach_the_phases_that_take_them():
    opt = gx.join_transforms(
        [gx.reduce_on_plateau(factor=0.5, patience=0), gx.identity()], boundaries=[3]
    )
    state = opt.init(None)
    outputs = []
    for _ in range(5):
        u, state = opt.update(jnp.ones(1), state, value=2.0)
        outputs.append(float(u[0]))
    # Plateau phase: improve (1), reduce (0.5), reduce (0.25); then the identity phase.
    assert outputs == [1.0, 0.5, 0.25, 1.0, 1.0]


def test_phases_with_updates_of_other_dtypes_raise():
    to_half = gx.stateless(lambda u, p: jax.tree.map(lambda x: x.astype(jnp.float16), u))
    opt = gx.join_transforms([gx.identity(), to_half], boundaries=[1])
    with pytest.raises(ValueError, match="phase 1 returns updates"):
        opt.update(jnp.ones(2), opt.init(jnp.ones(2)))


@pytest.mark.parametrize(
    "boundaries, error, match",
    [
        ([3], ValueError, "3 transformations need 2 boundaries"),
        ([3, 2], ValueError, "strictly increasing"),
        ([3, 3], ValueError, "strictly increasing"),
        ([0, 3], ValueError, r"`boundaries\[0\]` must be a whole number in \[1, 2147483646\]"),
        ([-2, 3], ValueError, r"`boundaries\[0\]` must be a whole number in \[1, 2147483646\]"),
        ([2, 2**31 - 1], ValueError, r"`boundaries\[1\]` must be .* 2147483646\], got 2147483647"),
        ([1.5, 3], TypeError, r"`boundaries\[0\]` must be a whole number"),
        ([True, 3], TypeError, r"`boundaries\[0\]` must be a whole number .*bool"),
        (4, TypeError, "sequence of ints"),
    ],
)
def test_invalid_boundaries_raise(boundaries, error, match):
    with pytest.raises(error, match=match):
        gx.join_transforms(_phases(), boundaries=boundaries)


def test_invalid_transforms_raise():
    with pytest.raises(ValueError, match="at least one"):
        gx.join_transforms([], boundaries=[])
    with pytest.raises(TypeError, match="sequence of transformations"):
        gx.join_transforms(gx.adam(), boundaries=[])
    with pytest.raises(TypeError, match="transform 1"):
        gx.join_transforms([gx.adam(), gx.sgd], boundaries=[2])
