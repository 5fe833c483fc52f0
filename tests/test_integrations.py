"""gradxform inside the frameworks people train with: Flax NNX, Equinox and Orbax.

Each test imports its framework with ``pytest.importorskip`` (the ``integrations`` extra installs
them). The references are the same steps written without the framework's helpers, on the same
gradients: a framework adds no arithmetic of its own, so the results must be bitwise equal.
All of it is in one file so that flax and equinox, which take seconds to import, load once.
"""

import os
import subprocess
import sys
import textwrap
from functools import partial
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform as gx

# Subprocesses import the gradxform under test, not whichever one is installed.
REPO = Path(gx.__file__).resolve().parents[1]
STEPS = 3


def _import_nnx():
    return pytest.importorskip("flax.nnx", reason="flax is in the `integrations` extra")


def _import_eqx():
    return pytest.importorskip("equinox", reason="equinox is in the `integrations` extra")


def _assert_bitwise(got, expected):
    """Same structure, dtypes, shapes and values (every value compared here is finite)."""
    assert jax.tree.structure(got) == jax.tree.structure(expected)
    chex.assert_trees_all_equal_shapes_and_dtypes(got, expected)
    chex.assert_trees_all_equal(got, expected, strict=True)
    chex.assert_tree_all_finite(expected)


def _batches():
    """One batch, ``STEPS`` times: the loss must go down."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((16, 3)), jnp.float32)
    y = jnp.asarray(rng.standard_normal((16, 2)), jnp.float32)
    return [(x, y)] * STEPS


def _from_numpy(abstract):
    """A model's abstract arrays (``jax.ShapeDtypeStruct``) filled with N(0, 1/4) draws."""
    rng = np.random.default_rng(1)
    return jax.tree.map(
        lambda x: (
            jnp.asarray(0.5 * rng.standard_normal(x.shape), x.dtype)
            if isinstance(x, jax.ShapeDtypeStruct)
            else x
        ),
        abstract,
    )


def _optimizer():
    # AdamW with a schedule, whose count lives in the state. Not clip_by_global_norm: on flat
    # buffers its norm is one sum instead of a sum of per-leaf sums, rounded differently (measured
    # here: 1 float32 ulp in some params after 3 steps; tests/test_flat.py bounds it).
    return gx.adamw(gx.linear_schedule(1e-2, 1e-3, 10), weight_decay=1e-2)


# ----------------------------------------------------------------------------------------------
# Neither framework is a dependency: importing gradxform and flattening plain params loads none.


def test_gradxform_does_not_import_the_frameworks():
    script = textwrap.dedent(
        """
        import sys
        import jax.numpy as jnp
        import gradxform as gx
        gx.flatten_params({"w": jnp.ones(3)})
        print(sorted(m for m in ("flax", "equinox", "orbax") if m in sys.modules))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stderr[-2000:]


# ----------------------------------------------------------------------------------------------
# Flax NNX.


def _nnx_mlp(nnx):
    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.hidden = nnx.Linear(3, 8, rngs=rngs)
            self.out = nnx.Linear(8, 2, rngs=rngs)

        def __call__(self, x):
            return self.out(jax.nn.tanh(self.hidden(x)))

    # Shapes from the initializers, values from NumPy: no random kernels to compile.
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: MLP(nnx.Rngs(0))))
    return nnx.merge(graphdef, _from_numpy(abstract))


def _mse(model, x, y):
    return jnp.mean((model(x) - y) ** 2)


def _train_on_batches(params, opt, loss_of, flat):
    """Jitted, donated training steps over ``_batches()`` with ``loss_of(params, x, y)``; on flat
    buffers when ``flat``: the two lines marked are the whole change. Returns the params (as
    given: a State, a module's arrays), the state and the losses."""
    layout = None
    if flat:
        params, layout = gx.flatten_params(params)  # the flat path's first line
    state = opt.init(params)

    @partial(jax.jit, donate_argnums=(0, 1))
    def step(params, state, x, y):
        def loss_fn(params):
            view = params if layout is None else layout.unflatten(params)  # its second line
            return loss_of(view, x, y)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = opt.update(grads, state, params)
        return gx.apply_updates(params, updates), state, loss

    losses = []
    for x, y in _batches():
        params, state, loss = step(params, state, x, y)
        losses.append(loss)
    return (params if layout is None else layout.unflatten(params)), state, jnp.stack(losses)


def _nnx_functional_steps(nnx, opt, flat):
    """The functional NNX step (split once, merge in the loss), on flat buffers when ``flat``."""
    graphdef, params, rest = nnx.split(_nnx_mlp(nnx), nnx.Param, ...)
    return _train_on_batches(
        params, opt, lambda view, x, y: _mse(nnx.merge(graphdef, view, rest), x, y), flat
    )


def test_nnx_optimizer_and_the_flat_step_equal_the_functional_step_bitwise():
    nnx = _import_nnx()
    opt = _optimizer()
    params, state, losses = _nnx_functional_steps(nnx, opt, flat=False)
    assert losses[-1] < losses[0]  # it trains

    # Flax's own loop: nnx.Optimizer, updated in place under nnx.jit.
    model = _nnx_mlp(nnx)
    optimizer = nnx.Optimizer(model, opt, wrt=nnx.Param)

    @nnx.jit
    def nnx_step(model, optimizer, x, y):
        loss, grads = nnx.value_and_grad(_mse)(model, x, y)
        optimizer.update(model, grads)
        return loss

    nnx_losses = jnp.stack([nnx_step(model, optimizer, x, y) for x, y in _batches()])
    assert int(optimizer.step[...]) == STEPS
    _assert_bitwise((nnx.state(model, nnx.Param), nnx_losses), (params, losses))
    # nnx.Optimizer keeps the state's arrays in its own variables; the leaves are gradxform's.
    _assert_bitwise(jax.tree.leaves(optimizer.opt_state), jax.tree.leaves(state))

    # The flat path: the same arithmetic per element, so the same bits, given back as a State.
    flat_params, _, flat_losses = _nnx_functional_steps(nnx, opt, flat=True)
    assert type(flat_params) is type(params) is nnx.State
    _assert_bitwise((flat_params, flat_losses), (params, losses))


def test_flatten_params_round_trips_an_nnx_state_and_refuses_the_module():
    nnx = _import_nnx()
    model = _nnx_mlp(nnx)
    params = nnx.state(model, nnx.Param)  # the model's own variables, not copies
    bias = np.asarray(params["out"]["bias"][...])
    flat, layout = gx.flatten_params(params)
    assert {k: v.shape for k, v in flat.items()} == {"float32": (3 * 8 + 8 + 8 * 2 + 2,)}
    back = layout.unflatten(flat)
    assert type(back) is nnx.State
    _assert_bitwise(back, params)
    nnx.update(model, layout.unflatten({"float32": 2 * flat["float32"]}))  # the model takes it
    np.testing.assert_array_equal(model.out.bias[...], 2 * bias)
    with pytest.raises(TypeError, match=r"module MLP itself; pass .*nnx\.state\(model, nnx\.Param"):
        gx.flatten_params(model)


# ----------------------------------------------------------------------------------------------
# Equinox.


def _eqx_mlp(eqx):
    abstract = eqx.filter_eval_shape(
        eqx.nn.MLP, 3, 2, 8, 1, activation=jax.nn.tanh, key=jax.random.key(0)
    )
    return _from_numpy(abstract)


def _eqx_mse(model, x, y):
    return jnp.mean((jax.vmap(model)(x) - y) ** 2)


def _eqx_partitioned_steps(eqx, opt, flat):
    """The step by hand (arrays and the rest split once, plain jit and grad over the arrays),
    on flat buffers when ``flat``."""
    params, static = eqx.partition(_eqx_mlp(eqx), eqx.is_array)
    return _train_on_batches(
        params, opt, lambda view, x, y: _eqx_mse(eqx.combine(view, static), x, y), flat
    )


def test_equinox_filter_jit_step_and_the_flat_step_equal_the_step_by_hand_bitwise():
    eqx = _import_eqx()
    opt = _optimizer()
    params, state, losses = _eqx_partitioned_steps(eqx, opt, flat=False)
    assert losses[-1] < losses[0]  # it trains

    # Equinox's idiom: filter_jit, filter_value_and_grad, the optimizer on the array leaves.
    @eqx.filter_jit
    def eqx_step(model, state, x, y):
        loss, grads = eqx.filter_value_and_grad(_eqx_mse)(model, x, y)
        updates, state = opt.update(grads, state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), state, loss

    model = _eqx_mlp(eqx)
    eqx_state, eqx_losses = opt.init(eqx.filter(model, eqx.is_array)), []
    for x, y in _batches():
        model, eqx_state, loss = eqx_step(model, eqx_state, x, y)
        eqx_losses.append(loss)
    _assert_bitwise((eqx.filter(model, eqx.is_array), eqx_state), (params, state))
    _assert_bitwise(jnp.stack(eqx_losses), losses)

    # The flat path: the same bits, given back as the module (arrays only, for eqx.combine).
    flat_params, _, flat_losses = _eqx_partitioned_steps(eqx, opt, flat=True)
    assert type(flat_params) is type(params) is eqx.nn.MLP
    _assert_bitwise((flat_params, flat_losses), (params, losses))


def test_flatten_params_round_trips_an_equinox_module_and_refuses_its_functions():
    eqx = _import_eqx()
    model = _eqx_mlp(eqx)
    params, static = eqx.partition(model, eqx.is_array)
    flat, layout = gx.flatten_params(params)
    assert {k: v.shape for k, v in flat.items()} == {"float32": (3 * 8 + 8 + 8 * 2 + 2,)}
    back = layout.unflatten(flat)
    assert type(back) is type(model)
    _assert_bitwise(back, params)
    combined = eqx.combine(back, static)  # the model again, its functions included
    assert jax.tree.structure(combined) == jax.tree.structure(model)
    assert combined.activation is model.activation
    with pytest.raises(
        TypeError, match=r"is a .*not an array; .*eqx\.filter\(model, eqx\.is_array"
    ):
        gx.flatten_params(model)


# ----------------------------------------------------------------------------------------------
# Orbax: an interrupted run, restored into fresh structures, ends where an uninterrupted one does.


def test_orbax_resume_is_bitwise_equal_to_uninterrupted_training(tmp_path):
    ocp = pytest.importorskip(
        "orbax.checkpoint", reason="orbax-checkpoint is in the `integrations` extra"
    )
    rng = np.random.default_rng(0)
    initial = {
        "w": jnp.asarray(rng.standard_normal((3, 4)), jnp.float32),
        "b": jnp.asarray(rng.standard_normal(4), jnp.float32),
    }
    grads = [jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape), p.dtype), initial)]
    grads += [jax.tree.map(lambda g: -0.5 * g + 0.1, grads[0]) for _ in range(2 * STEPS - 1)]
    opt = gx.chain(gx.clip_by_global_norm(1.0), gx.adam(gx.cosine_decay_schedule(1e-2, 10)))

    @jax.jit
    def step(params, state, g):
        updates, state = opt.update(g, state, params)
        return gx.apply_updates(params, updates), state

    def train(params, state, grads):
        for g in grads:
            params, state = step(params, state, g)
        return params, state

    straight = train(initial, opt.init(initial), grads)

    params, state = train(initial, opt.init(initial), grads[:STEPS])
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "step_3", {"params": params, "opt_state": state})
    checkpointer.wait_until_finished()
    del params, state
    # A new process knows only how to build the structures: a fresh init, as shapes and dtypes.
    fresh = {"params": initial, "opt_state": opt.init(initial)}
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, fresh)
    restored = checkpointer.restore(tmp_path / "step_3", abstract)
    assert jax.tree.structure(restored) == jax.tree.structure(fresh)
    assert STEPS in [int(x) for x in jax.tree.leaves(restored["opt_state"]) if x.ndim == 0]
    resumed = train(restored["params"], restored["opt_state"], grads[STEPS:])
    _assert_bitwise(resumed, straight)
