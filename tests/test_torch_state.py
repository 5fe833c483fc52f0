"""Optimizer state moves between ``torch.optim`` and gradxform mid-training
(``gx.from_torch_state``, ``gx.to_torch_state``).

Every case feeds the same 40 precomputed random gradients, in float64, to a torch optimizer and
to the gradxform optimizer with the same hyperparameters, over a tree of leaves of different
shapes (a (3, 4) matrix, a (4,) vector and a scalar, in a nested dict; a complex (3, 2) leaf and
a real (3,) one for the complex cases). torch's params are the leaves in the order of
``jax.tree.leaves(params)``, the order the conversion defines.

- torch -> gradxform: 20 torch steps, ``from_torch_state`` of its ``state_dict()``, 20
  gradxform steps from torch's params, compared after every step with torch's steps 21-40.
- gradxform -> torch: 20 gradxform steps, ``to_torch_state``, ``load_state_dict`` into a fresh
  torch optimizer on gradxform's params, 20 torch steps, compared after every step with
  gradxform's steps 21-40.
- The converted states themselves: ``from_torch_state`` of torch's state after 20 steps equals
  gradxform's own state after 20 steps, and ``to_torch_state`` of gradxform's equals torch's
  ``state_dict()``: the same param groups (keys in torch's order, values), the same state keys
  in the same order, tensors of the same dtype and shape and values.

Tolerance: the harness's ``rtol=1e-12, atol=1e-14`` (``tests/torch_harness.py``, justified in
``tests/test_torch_reference.py``): the two libraries evaluate the same formulas in another
order, a few ulps per step; 40 steps stay far below 1e-12 relative. A conversion error is far
larger: a step count off by one changes Adam's bias corrections by ~1e-3 relative, a moment
left at zero or put on the wrong param changes the next step by O(lr) (``test_the_comparison
_sees_a_wrong_state`` checks that the comparison catches both).
"""

import copy
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from references import require_torch
from torch_harness import ATOL64, RTOL64

import gradxform as gx
from gradxform._base import find_state
from gradxform.optimizers._links import TorchSpec, torch_spec

torch = require_torch()

STEPS = 40
HALF = 20


# ----------------------------------------------------------------------------------------------
# The runs.


def _params(complex_params=False, seed=0):
    rng = np.random.default_rng(seed)
    if complex_params:
        z = rng.normal(size=(3, 2)) + 1j * rng.normal(size=(3, 2))
        return {"z": z, "r": rng.normal(size=3)}
    # Insertion order differs from jax.tree.leaves' (sorted keys): layer/b, layer/w, scale.
    return {
        "layer": {"w": rng.normal(size=(3, 4)), "b": rng.normal(size=4)},
        "scale": np.array(1.5),
    }


def _gradients(params, seed=1, steps=STEPS):
    rng = np.random.default_rng(seed)

    def draw(p):
        shape = np.shape(p)
        g = rng.normal(size=shape)
        return g + 1j * rng.normal(size=shape) if np.iscomplexobj(p) else g

    return [jax.tree.map(lambda p: np.asarray(draw(p)), params) for _ in range(steps)]


def _stepper(opt):
    # One trace for every run: a converted state has init's dtypes and structure.
    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(params, state, grads):
        updates, state = opt.update(grads, state, params)
        return gx.apply_updates(params, updates), state

    return step


def _gx_steps(step, params, state, grads):
    history = []
    for g in grads:
        params, state = step(params, state, jax.tree.map(jnp.asarray, g))
        history.append([np.asarray(x) for x in jax.tree.leaves(params)])
    return history, params, state


def _tensors(params):
    return [torch.tensor(np.asarray(x), requires_grad=True) for x in jax.tree.leaves(params)]


def _torch_steps(optimizer, tensors, grads, scheduler=None, to_grad=None):
    history = []
    for g in grads:
        for tensor, leaf in zip(tensors, jax.tree.leaves(g), strict=True):
            tensor.grad = torch.tensor(leaf) if to_grad is None else to_grad(leaf)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        history.append([t.detach().numpy().copy() for t in tensors])
    return history


def _close(got, want, message):
    chex.assert_trees_all_close(
        got, want, rtol=RTOL64, atol=ATOL64, strict=True, custom_message=message
    )


def _assert_like_torch(ours, theirs, lr_close=False, ordered=True):
    """``ours`` (``to_torch_state``) is what torch's ``state_dict()`` holds, ``theirs``.

    ``ordered``: the group keys in the same order, the constructor's (a group given as a dict
    has the keys it was given first)."""
    assert len(ours["param_groups"]) == len(theirs["param_groups"])
    for mine, real in zip(ours["param_groups"], theirs["param_groups"], strict=True):
        real = {k: v for k, v in real.items() if k != "initial_lr"}  # a scheduler's key
        assert list(mine) == list(real) if ordered else set(mine) == set(real)
        if lr_close:  # a schedule's value against a scheduler's product of factors
            np.testing.assert_allclose(mine["lr"], real["lr"], rtol=RTOL64)
            mine, real = dict(mine, lr=None), dict(real, lr=None)
        assert mine == real
    assert list(ours["state"]) == list(theirs["state"])
    for index, real in theirs["state"].items():
        mine = ours["state"][index]
        assert list(mine) == list(real), index
        for key, value in real.items():
            if not torch.is_tensor(value):  # SparseAdam's step, a Python int
                assert type(mine[key]) is type(value) and mine[key] == value, key
                continue
            assert mine[key].dtype == value.dtype and mine[key].shape == value.shape, key
            _close(mine[key].numpy(), value.numpy(), f"state {index} {key}")


def _sgd_count_is_one(state):
    """gradxform's state with the momentum's count at 1: what ``from_torch_state`` sets for
    torch's SGD, which keeps no step, when not given ``step``."""
    return jax.tree.map(
        lambda s: s._replace(count=jnp.ones([], jnp.int32)) if isinstance(s, gx.TraceState) else s,
        state,
        is_leaf=lambda s: isinstance(s, gx.TraceState),
    )


def _round_trip(opt, make_torch, params0, grads, make_scheduler=None, step=None, to_grad=None):
    """Both directions, and the converted states; returns gradxform's state after 20 steps."""
    step_fn = _stepper(opt)
    treedef = jax.tree.structure(params0)
    tensors = _tensors(params0)
    torch_opt = make_torch(tensors)
    scheduler = None if make_scheduler is None else make_scheduler(torch_opt)
    torch_first = _torch_steps(torch_opt, tensors, grads[:HALF], scheduler, to_grad)
    saved = copy.deepcopy(torch_opt.state_dict())
    torch_last = _torch_steps(torch_opt, tensors, grads[HALF:], scheduler, to_grad)
    assert not np.allclose(torch_last[-1][0], torch_first[-1][0], rtol=1e-3)  # it moved

    _, params20, state20 = _gx_steps(
        step_fn, jax.tree.map(jnp.asarray, params0), opt.init(params0), grads[:HALF]
    )
    gx_last, _, _ = _gx_steps(step_fn, params20, state20, grads[HALF:])

    # torch -> gradxform, from torch's params.
    torch_params20 = treedef.unflatten([jnp.asarray(x) for x in torch_first[-1]])
    state = gx.from_torch_state(opt, torch_params20, saved, step=step)
    expected = state20
    if torch_spec(opt).cls_name == "SGD" and step is None:
        expected = _sgd_count_is_one(state20)
    _close(state, expected, "from_torch_state(torch's state) vs gradxform's state")
    got, _, _ = _gx_steps(step_fn, torch_params20, state, grads[HALF:])
    _close(got, torch_last, "gradxform continuing torch's run")

    # gradxform -> torch, from gradxform's params. `step` is what torch's step is, where
    # gradxform's state keeps no counter (Adagrad, RMSprop), else the state's count again.
    converted = gx.to_torch_state(opt, state20, params20, step=HALF)
    _assert_like_torch(converted, saved, lr_close=make_scheduler is not None)
    fresh_tensors = _tensors(params20)
    fresh = make_torch(fresh_tensors)
    fresh_scheduler = None if make_scheduler is None else make_scheduler(fresh)
    fresh.load_state_dict(converted)
    got = _torch_steps(fresh, fresh_tensors, grads[HALF:], fresh_scheduler, to_grad)
    _close(got, gx_last, "torch continuing gradxform's run")
    return state20


# ----------------------------------------------------------------------------------------------
# Every optimizer and option.


def _case(name, kwargs, cls, torch_kwargs, complex_params=False):
    label = ",".join(f"{k}={v}" for k, v in kwargs.items())
    suffix = "-complex" if complex_params else ""
    return pytest.param(
        name, kwargs, cls, torch_kwargs, complex_params, id=f"{name}[{label}]{suffix}"
    )


WD = {"weight_decay": 0.1}
BETAS = {"b1": 0.8, "b2": 0.95, "eps": 1e-3}
TORCH_BETAS = {"betas": (0.8, 0.95), "eps": 1e-3}

CASES = [
    _case("sgd", {"learning_rate": 0.05}, "SGD", {"lr": 0.05}),
    _case("sgd", {"learning_rate": 0.05, "momentum": 0.9}, "SGD", {"lr": 0.05, "momentum": 0.9}),
    _case(
        "sgd",
        {"learning_rate": 0.05, "momentum": 0.9, "nesterov": True, **WD},
        "SGD",
        {"lr": 0.05, "momentum": 0.9, "nesterov": True, **WD},
    ),
    _case(
        "sgd",
        {"learning_rate": 0.05, "momentum": 0.9, "dampening": 0.3, "maximize": True},
        "SGD",
        {"lr": 0.05, "momentum": 0.9, "dampening": 0.3, "maximize": True},
    ),
    _case("adam", {"learning_rate": 0.01}, "Adam", {"lr": 0.01}),
    _case(
        "adam", {"learning_rate": 0.01, **BETAS, **WD}, "Adam", {"lr": 0.01, **TORCH_BETAS, **WD}
    ),
    _case(
        "adam",
        {"learning_rate": 0.01, "amsgrad": True, **WD},
        "Adam",
        {"lr": 0.01, "amsgrad": True, **WD},
    ),
    _case(
        "adam",
        {"learning_rate": 0.01, "decoupled_weight_decay": True, "maximize": True, **WD},
        "Adam",
        {"lr": 0.01, "decoupled_weight_decay": True, "maximize": True, **WD},
    ),
    _case("amsgrad", {"learning_rate": 0.01}, "Adam", {"lr": 0.01, "amsgrad": True}),
    _case("adamw", {"learning_rate": 0.01}, "AdamW", {"lr": 0.01}),
    _case(
        "adamw",
        {"learning_rate": 0.01, "amsgrad": True, **BETAS, **WD},
        "AdamW",
        {"lr": 0.01, "amsgrad": True, **TORCH_BETAS, **WD},
    ),
    _case("adagrad", {"learning_rate": 0.1}, "Adagrad", {"lr": 0.1}),
    _case(
        "adagrad",
        {"learning_rate": 0.1, "lr_decay": 0.05, "initial_accumulator_value": 0.5, **WD},
        "Adagrad",
        {"lr": 0.1, "lr_decay": 0.05, "initial_accumulator_value": 0.5, **WD},
    ),
    _case("rmsprop", {"learning_rate": 0.01}, "RMSprop", {"lr": 0.01}),
    _case(
        "rmsprop",
        {"learning_rate": 0.01, "centered": True},
        "RMSprop",
        {"lr": 0.01, "centered": True},
    ),
    _case(
        "rmsprop",
        {"learning_rate": 0.01, "momentum": 0.9},
        "RMSprop",
        {"lr": 0.01, "momentum": 0.9},
    ),
    _case(
        "rmsprop",
        {"learning_rate": 0.01, "decay": 0.9, "centered": True, "momentum": 0.9, **WD},
        "RMSprop",
        {"lr": 0.01, "alpha": 0.9, "centered": True, "momentum": 0.9, **WD},
    ),
    _case("adamax", {"learning_rate": 0.02}, "Adamax", {"lr": 0.02}),
    _case(
        "adamax",
        {"learning_rate": 0.02, **BETAS, **WD},
        "Adamax",
        {"lr": 0.02, **TORCH_BETAS, **WD},
    ),
    _case("nadam", {"learning_rate": 0.02}, "NAdam", {"lr": 0.02}),
    _case("nadam", {"learning_rate": 0.02, **WD}, "NAdam", {"lr": 0.02, **WD}),
    _case(
        "nadam",
        {"learning_rate": 0.02, "momentum_decay": 0.05, "decoupled_weight_decay": True, **WD},
        "NAdam",
        {"lr": 0.02, "momentum_decay": 0.05, "decoupled_weight_decay": True, **WD},
    ),
    _case("radam", {"learning_rate": 0.01}, "RAdam", {"lr": 0.01}),
    _case(
        "radam",
        {"learning_rate": 0.01, "decoupled_weight_decay": True, **WD},
        "RAdam",
        {"lr": 0.01, "decoupled_weight_decay": True, **WD},
    ),
    _case("adadelta", {}, "Adadelta", {}),
    _case(
        "adadelta",
        {"learning_rate": 0.5, "rho": 0.8, "eps": 1e-4, **WD},
        "Adadelta",
        {"lr": 0.5, "rho": 0.8, "eps": 1e-4, **WD},
    ),
    _case("rprop", {}, "Rprop", {}),
    # Step sizes that reach both clamps within the first 20 steps.
    _case(
        "rprop",
        {"learning_rate": 0.05, "etas": (0.3, 1.5), "step_sizes": (1e-2, 0.2), "maximize": True},
        "Rprop",
        {"lr": 0.05, "etas": (0.3, 1.5), "step_sizes": (1e-2, 0.2), "maximize": True},
    ),
    # Averaging from step 12 (before the conversion), and from step 27 (after it).
    _case(
        "asgd",
        {"learning_rate": 0.05, "lambd": 0.01, "t0": 10.0},
        "ASGD",
        {"lr": 0.05, "lambd": 0.01, "t0": 10.0},
    ),
    _case(
        "asgd",
        {"learning_rate": 0.05, "lambd": 1e-3, "alpha": 0.5, "t0": 25.0, **WD},
        "ASGD",
        {"lr": 0.05, "lambd": 1e-3, "alpha": 0.5, "t0": 25.0, **WD},
    ),
]

# Complex params: torch's state tensors are complex, gradxform's (real, imaginary) pairs.
COMPLEX_CASES = [
    _case(*args, complex_params=True)
    for args in [
        (
            "sgd",
            {"learning_rate": 0.05, "momentum": 0.9, "dampening": 0.3},
            "SGD",
            {"lr": 0.05, "momentum": 0.9, "dampening": 0.3},
        ),
        (
            "adam",
            {"learning_rate": 0.01, "amsgrad": True, **WD},
            "Adam",
            {"lr": 0.01, "amsgrad": True, **WD},
        ),
        ("adamw", {"learning_rate": 0.01}, "AdamW", {"lr": 0.01}),
        (
            "adagrad",
            {"learning_rate": 0.1, "lr_decay": 0.05},
            "Adagrad",
            {"lr": 0.1, "lr_decay": 0.05},
        ),
        (
            "rmsprop",
            {"learning_rate": 0.01, "centered": True, "momentum": 0.9},
            "RMSprop",
            {"lr": 0.01, "centered": True, "momentum": 0.9},
        ),
        ("adamax", {"learning_rate": 0.02}, "Adamax", {"lr": 0.02}),
        ("nadam", {"learning_rate": 0.02}, "NAdam", {"lr": 0.02}),
        ("radam", {"learning_rate": 0.01}, "RAdam", {"lr": 0.01}),
        ("adadelta", {}, "Adadelta", {}),
        ("rprop", {}, "Rprop", {}),
        (
            "asgd",
            {"learning_rate": 0.05, "lambd": 0.01, "t0": 10.0},
            "ASGD",
            {"lr": 0.05, "lambd": 0.01, "t0": 10.0},
        ),
    ]
]


@pytest.mark.parametrize(
    ("name", "kwargs", "cls", "torch_kwargs", "complex_params"), CASES + COMPLEX_CASES
)
def test_state_moves_between_torch_and_gradxform(
    torch64, name, kwargs, cls, torch_kwargs, complex_params
):
    opt = getattr(gx, name)(**kwargs)
    assert torch_spec(opt).cls_name == cls
    params0 = _params(complex_params)
    _round_trip(
        opt,
        lambda ps: getattr(torch.optim, cls)(ps, **torch_kwargs),
        params0,
        _gradients(params0),
    )


def test_the_table_covers_every_class_that_converts():
    from gradxform.interop.torch_classes import CLASSES

    covered = {case.values[2] for case in CASES}
    assert covered | {"SparseAdam"} == set(CLASSES)  # SparseAdam: its own test below
    assert {case.values[2] for case in COMPLEX_CASES} == set(CLASSES) - {"SparseAdam"}


# ----------------------------------------------------------------------------------------------
# Schedules: a gradxform schedule matched by a torch scheduler, the counts converted.


def _exponential_lr(optimizer):
    return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.9)


@pytest.mark.parametrize(
    ("name", "kwargs", "cls", "torch_kwargs", "step"),
    [
        # Adam's step is every counter: the schedule's too.
        ("adam", {"b1": 0.8, "b2": 0.95}, "Adam", {"betas": (0.8, 0.95)}, None),
        # torch's SGD keeps no step: the scheduler's count is passed.
        ("sgd", {"momentum": 0.9}, "SGD", {"momentum": 0.9}, HALF),
    ],
)
def test_schedule_counts_are_converted(torch64, name, kwargs, cls, torch_kwargs, step):
    """``exponential_decay(lr, 1, 0.9)`` is ExponentialLR(gamma=0.9): ``lr * 0.9^k`` for the
    k-th step, counted from 0. The schedule moves the learning rate by 10% a step, so a count
    off by one fails the comparison by far."""
    opt = getattr(gx, name)(gx.exponential_decay(0.05, 1, 0.9), **kwargs)
    params0 = _params()
    state20 = _round_trip(
        opt,
        lambda ps: getattr(torch.optim, cls)(ps, lr=0.05, **torch_kwargs),
        params0,
        _gradients(params0),
        make_scheduler=_exponential_lr,
        step=step,
    )
    assert int(find_state(state20, gx.ScaleByScheduleState, "test").count) == HALF
    lr = gx.to_torch_state(opt, state20, params0)["param_groups"][0]["lr"]
    np.testing.assert_allclose(lr, 0.05 * 0.9**HALF, rtol=RTOL64)


def test_sgd_with_a_schedule_needs_the_step(torch64):
    opt = gx.sgd(gx.exponential_decay(0.05, 1, 0.9), momentum=0.9)
    params = _params()
    torch_opt = torch.optim.SGD(_tensors(params), lr=0.05, momentum=0.9)
    with pytest.raises(ValueError, match=r"from_torch_state: torch's SGD keeps no step.*`step=`"):
        gx.from_torch_state(opt, params, torch_opt.state_dict())


# ----------------------------------------------------------------------------------------------
# Param groups: a dict of optimizers, as multi_transform's.


def test_param_groups_of_multi_transform(torch64):
    labels = {"layer": {"w": "decay", "b": "plain"}, "scale": "plain"}
    groups = {"decay": gx.adam(0.01, weight_decay=0.1), "plain": gx.adam(0.02, amsgrad=True)}
    opt = gx.multi_transform(groups, labels)
    params0 = _params()
    grads = _gradients(params0)

    def make_torch(tensors):
        b, w, scale = tensors  # jax.tree.leaves' order: layer/b, layer/w, scale
        return torch.optim.Adam(
            [
                {"params": [w], "lr": 0.01, "weight_decay": 0.1},
                {"params": [b, scale], "lr": 0.02, "amsgrad": True},
            ]
        )

    step_fn = _stepper(opt)
    tensors = _tensors(params0)
    torch_opt = make_torch(tensors)
    torch_first = _torch_steps(torch_opt, tensors, grads[:HALF])
    saved = copy.deepcopy(torch_opt.state_dict())
    torch_last = _torch_steps(torch_opt, tensors, grads[HALF:])
    _, params20, state20 = _gx_steps(
        step_fn, jax.tree.map(jnp.asarray, params0), opt.init(params0), grads[:HALF]
    )
    gx_last, _, _ = _gx_steps(step_fn, params20, state20, grads[HALF:])

    treedef = jax.tree.structure(params0)
    torch_params20 = treedef.unflatten([jnp.asarray(x) for x in torch_first[-1]])
    state = gx.from_torch_state(groups, torch_params20, saved, param_labels=labels)
    assert isinstance(state, gx.MultiTransformState)
    _close(state, state20, "from_torch_state of two groups")
    got, _, _ = _gx_steps(step_fn, torch_params20, state, grads[HALF:])
    _close(got, torch_last, "gradxform continuing torch's two groups")

    converted = gx.to_torch_state(groups, state20, params20, param_labels=labels)
    assert [g["params"] for g in converted["param_groups"]] == [[0], [1, 2]]
    _assert_like_torch(converted, saved, ordered=False)
    fresh_tensors = _tensors(params20)
    fresh = make_torch(fresh_tensors)
    fresh.load_state_dict(converted)
    got = _torch_steps(fresh, fresh_tensors, grads[HALF:])
    _close(got, gx_last, "torch continuing gradxform's two groups")
    # Each group's state went to its own params: torch's param 0 is w, the first group's.
    assert converted["state"][0]["exp_avg"].shape == (3, 4)
    assert (
        "max_exp_avg_sq" in converted["state"][1] and "max_exp_avg_sq" not in converted["state"][0]
    )


# ----------------------------------------------------------------------------------------------
# SparseAdam, fed sparse gradients on torch's side (see tests/test_sparse_adam.py).


def test_sparse_adam_state_moves(torch64):
    rng = np.random.default_rng(3)
    params0 = {"emb": rng.normal(size=(10, 4)), "small": rng.normal(size=(6, 3))}
    grads = []
    for t in range(STEPS):
        step_grads = {}
        for key, value in params0.items():
            rows = rng.random(value.shape[0]) < (0.0 if t % 7 == 3 else 0.4)
            step_grads[key] = np.where(rows[:, None], rng.normal(size=value.shape), 0.0)
        grads.append(step_grads)

    def sparse(dense):
        rows = np.flatnonzero(np.any(dense != 0, axis=1))
        indices = torch.as_tensor(rows.reshape(1, -1).astype(np.int64))
        return torch.sparse_coo_tensor(
            indices, torch.as_tensor(dense[rows]), size=dense.shape, check_invariants=True
        )

    _round_trip(
        gx.sparse_adam(0.02, b1=0.8, b2=0.95),
        lambda ps: torch.optim.SparseAdam(ps, lr=0.02, betas=(0.8, 0.95)),
        params0,
        grads,
        to_grad=sparse,
    )


# ----------------------------------------------------------------------------------------------
# The comparison can fail.


def test_the_comparison_sees_a_wrong_state(torch64):
    """Continuing torch's Adam from a fresh state, from a count one short, or with the moments
    of two params swapped, fails the comparison of ``_round_trip``."""
    opt = gx.adam(0.01)
    params0 = {"a": np.linspace(-1, 1, 4), "b": np.linspace(2, -2, 4)}
    grads = _gradients(params0)
    tensors = _tensors(params0)
    torch_opt = torch.optim.Adam(tensors, lr=0.01)
    first = _torch_steps(torch_opt, tensors, grads[:HALF])
    saved = copy.deepcopy(torch_opt.state_dict())
    last = _torch_steps(torch_opt, tensors, grads[HALF:])
    params20 = {"a": jnp.asarray(first[-1][0]), "b": jnp.asarray(first[-1][1])}
    state = gx.from_torch_state(opt, params20, saved)
    step_fn = _stepper(opt)
    _close(_gx_steps(step_fn, params20, state, grads[HALF:])[0], last, "the right state")
    adam_state, rest = state[0], state[1:]  # real_pairs(chain(scale_by_adam, scale))
    assert isinstance(adam_state, gx.ScaleByAdamState) and int(adam_state.count) == HALF
    short = (adam_state._replace(count=adam_state.count - 1), *rest)
    swapped = (adam_state._replace(mu={"a": adam_state.mu["b"], "b": adam_state.mu["a"]}), *rest)
    for bad in [opt.init(params20), short, swapped]:
        with pytest.raises(AssertionError):
            _close(_gx_steps(step_fn, params20, bad, grads[HALF:])[0], last, "a wrong state")


# ----------------------------------------------------------------------------------------------
# The record, and the errors.


def test_the_record_leaves_the_transformation_as_it_was():
    opt = gx.adam(0.01, weight_decay=0.1, maximize=True)
    assert isinstance(opt, gx.GradientTransformation) and len(opt) == 2
    assert torch_spec(opt) == TorchSpec(
        "Adam",
        {
            "lr": 0.01,
            "betas": (0.9, 0.999),
            "eps": 1e-8,
            "weight_decay": 0.1,
            "amsgrad": False,
            "decoupled_weight_decay": False,
            "maximize": True,
        },
    )
    with pytest.raises(TypeError):
        torch_spec(opt).group["lr"] = 1.0  # frozen
    params = {"w": jnp.ones(3)}
    plain = gx.chain(
        gx.scale(-1.0), gx.add_l2(0.1), gx.scale_by_adam(), gx.scale_by_learning_rate(0.01)
    )
    got = opt.update({"w": jnp.arange(3.0)}, opt.init(params), params)
    want = plain.update({"w": jnp.arange(3.0)}, plain.init(params), params)
    chex.assert_trees_all_equal(got, want)


OPTIMIZERS_WITHOUT_A_TORCH_COUNTERPART = {
    "chain": lambda: gx.chain(gx.adam(0.01)),
    "inject_hyperparams": lambda: gx.inject_hyperparams(gx.adam)(learning_rate=0.01),
    "lion": lambda: gx.lion(),
    "transformation": lambda: gx.scale_by_adam(),
    "eps_root": lambda: gx.adam(eps_root=1e-8),
    "adamw-mask": lambda: gx.adamw(mask=gx.decay_matrices_only),
    "rmsprop-eps_root": lambda: gx.rmsprop(eps_root=1e-8),
}


@pytest.mark.parametrize(
    "make",
    OPTIMIZERS_WITHOUT_A_TORCH_COUNTERPART.values(),
    ids=list(OPTIMIZERS_WITHOUT_A_TORCH_COUNTERPART),
)
def test_refuses_optimizers_without_a_torch_counterpart(torch64, make):
    opt = make()
    params = {"w": jnp.ones(3)}
    message = (
        r"not an optimizer whose state converts.*These do, called as they are: adadelta, "
        r"adagrad, adam, adamax, adamw, amsgrad, asgd, nadam, radam, rmsprop, rprop, sgd, "
        r"sparse_adam\."
    )
    with pytest.raises(TypeError, match="to_torch_state: `optimizer` is " + message):
        gx.to_torch_state(opt, opt.init(params), params)
    state_dict = torch.optim.Adam(_tensors(params)).state_dict()
    with pytest.raises(TypeError, match="from_torch_state: `optimizer` is " + message):
        gx.from_torch_state(opt, params, state_dict)


def _torch_adam(params, steps=2, **kwargs):
    tensors = _tensors(params)
    optimizer = torch.optim.Adam(tensors, **kwargs)
    _torch_steps(optimizer, tensors, _gradients(params, steps=steps))
    return copy.deepcopy(optimizer.state_dict())


def test_refuses_the_state_of_another_optimizer(torch64):
    params = _params()
    sgd_state = gx.sgd(0.1, momentum=0.9).init(params)
    with pytest.raises(TypeError, match=r"to_torch_state: `state` is not a state of `optimizer`"):
        gx.to_torch_state(gx.adam(), sgd_state, params)
    with pytest.raises(TypeError, match=r"to_torch_state: `state` is not a state of `optimizer`"):
        gx.to_torch_state(gx.adam(), gx.adam(amsgrad=True).init(params), params)
    sgd = torch.optim.SGD(_tensors(params), lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match=r"not a torch.optim.Adam group.*another optimizer's"):
        gx.from_torch_state(gx.adam(), params, sgd.state_dict())
    # Adam and AdamW have the same keys: the values tell them apart.
    with pytest.raises(ValueError, match=r"decoupled_weight_decay: torch False, gradxform True"):
        gx.from_torch_state(gx.adamw(), params, _torch_adam(params, weight_decay=0.01))
    with pytest.raises(ValueError, match=r"betas: torch \(0.8, 0.999\), gradxform \(0.9, 0.999\)"):
        gx.from_torch_state(gx.adam(), params, _torch_adam(params, betas=(0.8, 0.999)))
    # lr is not compared: a torch scheduler moves it.
    gx.from_torch_state(gx.adam(0.5), params, _torch_adam(params, lr=0.01))


def test_refuses_a_missing_leaf_or_key(torch64):
    params = _params()
    saved = _torch_adam(params)
    missing_param = copy.deepcopy(saved)
    del missing_param["state"][1]
    with pytest.raises(
        ValueError, match=r"holds no state for the params \[\"\['layer'\]\['w'\]\"\]"
    ):
        gx.from_torch_state(gx.adam(), params, missing_param)
    missing_key = copy.deepcopy(saved)
    del missing_key["state"][2]["exp_avg_sq"]
    with pytest.raises(ValueError, match=r"the param \['scale'\] has no 'exp_avg_sq'"):
        gx.from_torch_state(gx.adam(), params, missing_key)
    # A param that missed a step: torch's counts differ, gradxform's cannot.
    tensors = _tensors(params)
    optimizer = torch.optim.Adam(tensors)
    _torch_steps(optimizer, tensors, _gradients(params, steps=2))
    tensors[0].grad = None
    tensors[1].grad, tensors[2].grad = torch.ones(3, 4), torch.ones(())  # b takes no step
    optimizer.step()
    with pytest.raises(ValueError, match=r"'step' differs between the params.*\[2.0, 3.0, 3.0\]"):
        gx.from_torch_state(gx.adam(), params, optimizer.state_dict())


def test_refuses_a_param_count_or_shape_mismatch(torch64):
    params = _params()
    saved = _torch_adam(params)
    fewer = {"layer": params["layer"]}
    with pytest.raises(
        ValueError, match=r"param group 0 has 3 params and the params tree 2 leaves"
    ):
        gx.from_torch_state(gx.adam(), fewer, saved)
    transposed = {
        "layer": {"w": params["layer"]["w"].T, "b": params["layer"]["b"]},
        "scale": params["scale"],
    }
    with pytest.raises(
        ValueError,
        match=r"'exp_avg' of the param \['layer'\]\['w'\] is float64\[3, 4\]; "
        r"the param is real of shape \[4, 3\]",
    ):
        gx.from_torch_state(gx.adam(), transposed, saved)
    state = gx.adam().init(params)
    with pytest.raises(TypeError, match=r"to_torch_state: `state` is not a state of `optimizer`"):
        gx.to_torch_state(gx.adam(), state, fewer)
    with pytest.raises(
        ValueError, match=r"to_torch_state: the state's leaf .*\['w'\].* float64\[3, 4\]"
    ):
        gx.to_torch_state(gx.adam(), state, transposed)
    groups = {"a": gx.adam(), "b": gx.adam()}
    labels = {"layer": "a", "scale": "b"}
    with pytest.raises(ValueError, match=r"the state_dict has 1 param groups and the optimizer 2"):
        gx.from_torch_state(groups, params, saved, param_labels=labels)


def test_refuses_steps_that_disagree(torch64):
    params = _params()
    saved = _torch_adam(params, steps=3)
    with pytest.raises(ValueError, match=r"from_torch_state: `step` is 5, torch's step 3"):
        gx.from_torch_state(gx.adam(), params, saved, step=5)
    state = gx.from_torch_state(gx.adam(), params, saved, step=3)
    with pytest.raises(ValueError, match=r"to_torch_state: `step` is 4, the state's count 3"):
        gx.to_torch_state(gx.adam(), state, params, step=4)
    with pytest.raises(TypeError, match=r"from_torch_state: `step` must be a whole number"):
        gx.from_torch_state(gx.adam(), params, saved, step=2.5)


def test_refuses_mismatched_groups(torch64):
    params = _params()
    labels = {"layer": "a", "scale": "b"}
    with pytest.raises(TypeError, match=r"a dict of optimizers needs `param_labels`"):
        gx.to_torch_state({"a": gx.adam()}, None, params)
    with pytest.raises(TypeError, match=r"`param_labels` goes with a dict of optimizers"):
        gx.to_torch_state(gx.adam(), None, params, param_labels=labels)
    with pytest.raises(ValueError, match=r"one torch optimizer has one class.*\['Adam', 'SGD'\]"):
        gx.to_torch_state({"a": gx.adam(), "b": gx.sgd(0.1)}, None, params, param_labels=labels)


def test_says_what_to_install_without_torch(torch64, monkeypatch):
    params = {"w": jnp.ones(3)}
    state = gx.adam().init(params)
    state_dict = torch.optim.Adam(_tensors(params)).state_dict()
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    for call in (
        lambda: gx.to_torch_state(gx.adam(), state, params),
        lambda: gx.from_torch_state(gx.adam(), params, state_dict),
    ):
        with pytest.raises(
            ImportError, match=r"needs PyTorch.*`pip install torch`.*gradxform\[compare\]"
        ):
            call()


def test_sgd_without_step_sets_the_momentum_count_to_one(torch64):
    """torch's SGD keeps no step: the momentum's count only tells the first step (b = g) from
    the others, so 1 is enough where torch holds buffers, and 0 where it does not."""
    params = _params()
    opt = gx.sgd(0.05, momentum=0.9, dampening=0.5)
    tensors = _tensors(params)
    optimizer = torch.optim.SGD(tensors, lr=0.05, momentum=0.9, dampening=0.5)
    before = gx.from_torch_state(opt, params, optimizer.state_dict())
    assert int(find_state(before, gx.TraceState, "test").count) == 0
    _torch_steps(optimizer, tensors, _gradients(params, steps=3))
    after = gx.from_torch_state(opt, params, optimizer.state_dict())
    assert int(find_state(after, gx.TraceState, "test").count) == 1
    given = gx.from_torch_state(opt, params, optimizer.state_dict(), step=3)
    assert int(find_state(given, gx.TraceState, "test").count) == 3
    # Back to torch: no buffer before the first step (torch would dampen the first gradient).
    assert gx.to_torch_state(opt, before, params)["state"] == {}
    with pytest.raises(ValueError, match=r"`step` is 0, but torch holds momentum buffers"):
        gx.from_torch_state(opt, params, optimizer.state_dict(), step=0)


def test_a_state_without_a_counter_writes_the_given_step(torch64):
    """RMSprop without momentum keeps no count (torch's step enters none of its arithmetic):
    ``to_torch_state`` writes ``step``, 0 unless given."""
    params = _params()
    opt = gx.rmsprop(0.01)
    state = opt.init(params)
    assert not any(
        "count" in s._fields
        for s in jax.tree.leaves(state, is_leaf=lambda s: hasattr(s, "_fields"))
    )
    for step, want in [(None, 0.0), (7, 7.0)]:
        converted = gx.to_torch_state(opt, state, params, step=step)
        assert [float(s["step"]) for s in converted["state"].values()] == [want] * 3


def test_the_cases_reach_the_regimes_they_claim(torch64):
    """The second Rprop case's step sizes sit at both clamps when converted; ASGD with t0=10
    is averaging then (mu < 1), with t0=25 not yet (mu = 1)."""
    params = _params()
    grads = _gradients(params)[:HALF]

    def state_after(cls, **kwargs):
        tensors = _tensors(params)
        optimizer = getattr(torch.optim, cls)(tensors, **kwargs)
        _torch_steps(optimizer, tensors, grads)
        return list(optimizer.state_dict()["state"].values())

    rprop = state_after("Rprop", lr=0.05, etas=(0.3, 1.5), step_sizes=(1e-2, 0.2), maximize=True)
    sizes = np.concatenate([s["step_size"].numpy().ravel() for s in rprop])
    assert sizes.min() == 1e-2 and sizes.max() == 0.2
    assert float(state_after("ASGD", lr=0.05, lambd=0.01, t0=10.0)[0]["mu"]) < 1
    assert float(state_after("ASGD", lr=0.05, lambd=1e-3, alpha=0.5, t0=25.0)[0]["mu"]) == 1
