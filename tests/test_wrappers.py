"""Tests of gradxform.wrappers: masked, multi_transform, freeze, set_to_zero, decay_matrices_only.

References: NumPy re-derivations of momentum SGD and Adam(W) in float64, and ``torch.optim``
with parameter groups. float64 comparisons use ``rtol=1e-12``: the formulas are evaluated in
a different order on each side, which costs a few ulps (~1e-16 relative) per step, far below
the tolerance, while any wrong selection of leaves (a decayed bias, a group with the other
group's learning rate) changes the result at the first step by orders of magnitude more.
"""

import dataclasses
import functools
import math
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform as gx
from gradxform._masks import is_mask_function

RTOL64 = 1e-12
SHAPES = {"enc": {"w": (3, 2), "b": (2,)}, "head": {"w": (2, 1)}}


def _tree_of(shapes, fn):
    return jax.tree.map(fn, shapes, is_leaf=lambda s: isinstance(s, tuple))


def _params(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return _tree_of(SHAPES, lambda s: rng.normal(size=s).astype(dtype))


def _grads(seed, dtype=np.float64):
    return _params(seed, dtype)


def _state_bytes(tree) -> int:
    """Bytes of a tree's leaves: arrays, or the shapes ``jax.eval_shape`` gives (no compute)."""
    return sum(math.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def _init_bytes(opt, params) -> int:
    return _state_bytes(jax.eval_shape(opt.init, params))


def _np_momentum(grads_seq, lr, mu):
    """Updates of heavy-ball SGD (torch's, ``b_1 = g_1``) for one leaf, in NumPy."""
    b, out = None, []
    for g in grads_seq:
        b = g if b is None else mu * b + g
        out.append(-lr * b)
    return out


def _np_adamw(p, grad_fn, steps, lr, wd, b1=0.9, b2=0.999, eps=1e-8):
    """Params after ``steps`` AdamW steps (decoupled decay), one leaf, in NumPy float64."""
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t in range(1, steps + 1):
        g = grad_fn(p)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        direction = (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        p = p - lr * (direction + wd * p)
    return p


def _signature(tree):
    return jax.tree.map(lambda x: (x.shape, x.dtype, jax.typeof(x).weak_type), tree)


def _assert_stable_under_jit(opt, params, grads, steps=3):
    """One trace for several jitted steps, and state dtypes/shapes as ``init`` made them."""

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(params, state, grads):
        updates, state = opt.update(grads, state, params)
        return gx.apply_updates(params, updates), state

    state = opt.init(params)
    expected = _signature(state)
    for _ in range(steps):
        params, state = step(params, state, grads)
    assert _signature(state) == expected
    return params, state


# ----------------------------------------------------------------------------------------------
# masked


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class _Layer:
    """A callable pytree, as an Equinox module would be: its fields are the leaves."""

    w: Any
    b: Any

    def __call__(self, x):
        return x @ self.w + self.b


@pytest.mark.parametrize(
    ("mask", "expected"),
    [
        # Leaves in JAX's order: enc.b, enc.w, head.w.
        ({"enc": {"w": True, "b": False}, "head": {"w": True}}, [False, True, True]),
        ({"enc": False, "head": True}, [False, False, True]),
        (gx.decay_matrices_only, [False, True, True]),
        (lambda p: {"enc": {"w": False, "b": True}, "head": False}, [True, False, False]),
        (functools.partial(lambda flag, p: jax.tree.map(lambda _: flag, p), True), [True] * 3),
    ],
    ids=["tree", "prefix", "function", "lambda", "partial"],
)
def test_masked_applies_inner_to_selected_leaves_only(x64, mask, expected):
    lr, mu = 0.1, 0.9
    opt = gx.masked(gx.sgd(lr, momentum=mu), mask)
    params = _params()
    grads_seq = [_grads(seed) for seed in (1, 2, 3)]
    state = opt.init(params)
    # No momentum buffer is allocated for the leaves left out.
    trace = state.inner_state[0].trace
    assert [
        not isinstance(x, gx.MaskedNode)
        for x in jax.tree.leaves(trace, is_leaf=lambda x: isinstance(x, gx.MaskedNode))
    ] == expected
    outputs = []
    for grads in grads_seq:
        updates, state = opt.update(grads, state, params)
        outputs.append(updates)
    for i, keep in enumerate(expected):
        seq = [jax.tree.leaves(g)[i] for g in grads_seq]
        want = _np_momentum(seq, lr, mu) if keep else seq
        got = [np.asarray(jax.tree.leaves(u)[i]) for u in outputs]
        np.testing.assert_allclose(got, want, rtol=RTOL64, atol=0)


def test_masked_reads_a_callable_pytree_as_a_tree():
    params = _Layer(w=jnp.ones((2, 2)), b=jnp.ones(2))
    mask = _Layer(w=True, b=False)
    assert callable(mask) and not is_mask_function(mask)
    opt = gx.masked(gx.scale(3.0), mask)
    updates, _ = opt.update(params, opt.init(params))
    np.testing.assert_array_equal(updates.w, 3 * np.ones((2, 2)))
    np.testing.assert_array_equal(updates.b, np.ones(2))
    # Also when the callable pytree mask is a prefix of a larger params tree.
    nested = _Layer(w={"a": jnp.ones(2), "c": jnp.ones(3)}, b=jnp.ones(2))
    updates, _ = opt.update(nested, opt.init(nested))
    np.testing.assert_array_equal(updates.w["c"], 3 * np.ones(3))
    np.testing.assert_array_equal(updates.b, np.ones(2))


def test_is_mask_function_only_for_plain_functions():
    assert is_mask_function(gx.decay_matrices_only)
    assert is_mask_function(lambda p: p)
    assert is_mask_function(functools.partial(lambda a, p: p, 1))
    assert not is_mask_function({"w": True})
    assert not is_mask_function(_Layer(w=True, b=False))


def test_masked_bad_mask_structure_names_both_structures():
    params = _params()
    mask = {"enc": {"w": True}, "head": True}  # enc.b missing
    opt = gx.masked(gx.scale(2.0), mask)
    with pytest.raises(ValueError, match="`mask` does not match the params") as info:
        opt.init(params)
    message = str(info.value)
    assert str(jax.tree.structure(mask)) in message
    assert str(jax.tree.structure(params)) in message


@pytest.mark.parametrize("bad_leaf", [1, jnp.array(True), np.bool_(True), "yes"])
def test_masked_non_bool_mask_leaves_raise_type_error(bad_leaf):
    params = {"w": jnp.ones(2), "b": jnp.ones(2)}
    # Checked at construction: a tree mask's leaves are known then.
    with pytest.raises(TypeError, match="masked: `mask` must be a tree of Python bools"):
        gx.masked(gx.scale(2.0), {"w": bad_leaf, "b": False})
    # A mask function's result is checked at init.
    opt = gx.masked(gx.scale(2.0), lambda p: {"w": bad_leaf, "b": False})
    with pytest.raises(TypeError, match="mask leaves must be Python bools"):
        opt.init(params)


def test_masked_inside_masked_and_with_none_leaves():
    # A None leaf is an empty subtree: the mask carries None in the same place.
    params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2), "frozen": None}
    inner = gx.masked(gx.scale(3.0), {"w": True, "b": False, "frozen": None})
    opt = gx.masked(inner, {"w": True, "b": True, "frozen": None})
    updates, _ = opt.update(params, opt.init(params), params)
    np.testing.assert_array_equal(updates["w"], 3 * np.ones((2, 2)))
    np.testing.assert_array_equal(updates["b"], np.ones(2))
    assert updates["frozen"] is None


def test_decay_matrices_only_with_adamw_decays_matrices_only(x64):
    lr, wd, steps = 0.05, 0.3, 5
    a = _params(seed=7)
    grad_fn = jax.tree.map(lambda ai: lambda p: ai * p + 1.0, a)  # one gradient per leaf
    params = _params()
    opt = gx.adamw(lr, weight_decay=wd, mask=gx.decay_matrices_only)
    state = opt.init(params)
    p = params
    for _ in range(steps):
        grads = jax.tree.map(lambda f, x: f(np.asarray(x)), grad_fn, p)
        updates, state = opt.update(grads, state, p)
        p = gx.apply_updates(p, updates)
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        f = functools.reduce(lambda t, k: t[k.key], path, grad_fn)
        decay = wd if np.ndim(leaf) >= 2 else 0.0
        want = _np_adamw(np.asarray(leaf), f, steps, lr, decay)
        got = functools.reduce(lambda t, k: t[k.key], path, p)
        np.testing.assert_allclose(got, want, rtol=RTOL64, atol=0)
    # The biases really differ from decaying them: the test can tell the two apart.
    no_mask = _np_adamw(np.asarray(params["enc"]["b"]), grad_fn["enc"]["b"], steps, lr, wd)
    assert not np.allclose(p["enc"]["b"], no_mask, rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# multi_transform


def _affine_grad(seed=3):
    """``g = a * p + c`` for each of ``w`` (3, 2) and ``b`` (2,), evaluated in NumPy."""
    rng = np.random.default_rng(seed)
    coef = {
        k: (rng.uniform(0.5, 1.5, size=s), rng.normal(size=s))
        for k, s in {"w": (3, 2), "b": (2,)}.items()
    }
    return lambda params: {k: coef[k][0] * np.asarray(params[k]) + coef[k][1] for k in coef}


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
def test_multi_transform_matches_torch_parameter_groups(torch64, kind):
    torch = torch64
    rng = np.random.default_rng(0)
    init = {"w": rng.normal(size=(3, 2)), "b": rng.normal(size=2)}
    grad_fn = _affine_grad()
    steps = 50
    if kind == "sgd":
        groups = {"w": {"lr": 0.1, "weight_decay": 1e-2}, "b": {"lr": 0.01}}
        make_torch = functools.partial(torch.optim.SGD, momentum=0.9)
        opt = gx.multi_transform(
            {
                "decayed": gx.sgd(0.1, momentum=0.9, weight_decay=1e-2),
                "plain": gx.sgd(0.01, momentum=0.9),
            },
            {"w": "decayed", "b": "plain"},
        )
    else:
        groups = {"w": {"lr": 1e-2, "weight_decay": 0.1}, "b": {"lr": 1e-3, "weight_decay": 0.0}}
        make_torch = torch.optim.AdamW
        opt = gx.multi_transform(
            {"decayed": gx.adamw(1e-2, weight_decay=0.1), "plain": gx.adamw(1e-3, weight_decay=0)},
            {"w": "decayed", "b": "plain"},
        )
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in init.items()}
    torch_opt = make_torch([{"params": [tensors[k]], **groups[k]} for k in ("w", "b")])
    update = jax.jit(opt.update)
    params = jax.tree.map(jnp.asarray, init)
    state = opt.init(params)
    for _ in range(steps):
        grads = grad_fn({k: t.detach().numpy() for k, t in tensors.items()})
        for k, t in tensors.items():
            t.grad = torch.tensor(grads[k])
        torch_opt.step()
        updates, state = update(grad_fn(params), state, params)
        params = gx.apply_updates(params, updates)
        for k, t in tensors.items():
            np.testing.assert_allclose(params[k], t.detach().numpy(), rtol=RTOL64, atol=0)


def test_multi_transform_allocates_state_per_group_only():
    params = {"w": jnp.ones((4, 3)), "b": jnp.ones(3)}
    opt = gx.multi_transform({"adam": gx.adam(1e-3), "sgd": gx.sgd(0.1)}, {"w": "adam", "b": "sgd"})
    state = opt.init(params)
    assert isinstance(state, gx.MultiTransformState)
    adam_state = state.inner_states["adam"][0]
    assert adam_state.mu["b"] == gx.MaskedNode() and adam_state.nu["b"] == gx.MaskedNode()
    # Adam's two moments of w and its counter; SGD keeps nothing.
    assert _state_bytes(state) == 2 * 4 * 12 + 4
    assert _init_bytes(gx.adam(1e-3), params) == 2 * 4 * 15 + 4


def test_multi_transform_labels_function_and_prefix():
    params = {"enc": {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}, "head": jnp.ones(2)}
    by_function = gx.multi_transform(
        {"big": gx.scale(10.0), "small": gx.scale(0.5)},
        lambda p: jax.tree.map(lambda x: "big" if x.ndim >= 2 else "small", p),
    )
    by_prefix = gx.multi_transform(
        {"enc": gx.scale(10.0), "head": gx.set_to_zero()}, {"enc": "enc", "head": "head"}
    )
    updates, _ = by_function.update(params, by_function.init(params), params)
    np.testing.assert_array_equal(updates["enc"]["w"], 10 * np.ones((2, 2)))
    np.testing.assert_array_equal(updates["enc"]["b"], 0.5 * np.ones(2))
    np.testing.assert_array_equal(updates["head"], 0.5 * np.ones(2))
    updates, _ = by_prefix.update(params, by_prefix.init(params), params)
    np.testing.assert_array_equal(updates["enc"]["b"], 10 * np.ones(2))
    np.testing.assert_array_equal(updates["head"], np.zeros(2))


def test_multi_transform_label_errors():
    transforms = {"a": gx.scale(1.0), "b": gx.scale(2.0)}
    with pytest.raises(ValueError, match=r"no transformation for the label\(s\) \['c'\]"):
        gx.multi_transform(transforms, {"w": "a", "x": "b", "y": "c"})
    with pytest.raises(ValueError, match=r"transformation\(s\) \['b'\] label no parameter"):
        gx.multi_transform(transforms, {"w": "a", "x": "a"})
    # With a labelling function the check happens at init, once the labels are known.
    opt = gx.multi_transform(transforms, lambda p: jax.tree.map(lambda _: "a", p))
    with pytest.raises(ValueError, match=r"\['b'\] label no parameter"):
        opt.init({"w": jnp.ones(2)})
    with pytest.raises(TypeError, match="non-empty dict"):
        gx.multi_transform({}, {"w": "a"})
    with pytest.raises(TypeError, match="Did you pass an optimizer factory"):
        gx.multi_transform({"a": gx.adam}, {"w": "a"})
    with pytest.raises(ValueError, match="`param_labels` does not match"):
        gx.multi_transform(transforms, {"w": "a", "x": "b"}).init({"w": jnp.ones(2)})


# ----------------------------------------------------------------------------------------------
# set_to_zero and freeze


def test_set_to_zero_gives_exact_zeros_and_no_state():
    opt = gx.set_to_zero()
    grads = {"w": jnp.array([1.0, jnp.nan, jnp.inf]), "b": jnp.ones(2, jnp.bfloat16)}
    state = opt.init(grads)
    assert state == gx.EmptyState()
    updates, _ = opt.update(grads, state)
    np.testing.assert_array_equal(updates["w"], np.zeros(3))
    assert updates["b"].dtype == jnp.bfloat16 and not np.any(np.asarray(updates["b"]))


@pytest.mark.parametrize(
    "mask",
    [{"enc": True, "head": False}, lambda p: {"enc": True, "head": False}],
    ids=["tree", "function"],
)
def test_freeze_zeroes_frozen_and_trains_the_rest(x64, mask):
    lr, steps = 0.01, 4
    params = _params()
    opt = gx.freeze(mask, inner=gx.adamw(lr, weight_decay=0.0))
    state = opt.init(params)
    p = params
    for _ in range(steps):
        grads = jax.tree.map(lambda x: 2.0 * np.asarray(x) - 1.0, p)
        grads["enc"]["b"] = np.array([np.nan, 1.0])  # a frozen leaf's NaN gradient is dropped
        updates, state = opt.update(grads, state, p)
        assert all(not np.any(np.asarray(u)) for u in jax.tree.leaves(updates["enc"]))
        p = gx.apply_updates(p, updates)
    for path in ("enc/w", "enc/b"):
        a, b = path.split("/")
        np.testing.assert_array_equal(p[a][b], params[a][b])
    want = _np_adamw(np.asarray(params["head"]["w"]), lambda x: 2.0 * x - 1.0, steps, lr, 0.0)
    np.testing.assert_allclose(p["head"]["w"], want, rtol=RTOL64, atol=0)


def test_freeze_allocates_no_state_for_frozen_leaves():
    params = {"backbone": jnp.ones((64, 32)), "head": jnp.ones((32, 4))}
    mask = {"backbone": True, "head": False}
    frozen = _init_bytes(gx.freeze(mask, inner=gx.adam(1e-3)), params)
    full = _init_bytes(gx.adam(1e-3), params)
    # Adam keeps two moments per leaf: freezing removes exactly the backbone's two.
    assert full - frozen == 2 * params["backbone"].nbytes
    assert frozen == 2 * params["head"].nbytes + 4
    # Chaining a zeroing mask in front of Adam would not: a chain link cannot drop later state.
    chained = gx.chain(gx.masked(gx.set_to_zero(), mask), gx.adam(1e-3))
    assert _init_bytes(chained, params) == full


def test_freeze_everything_and_bad_mask():
    params = {"w": jnp.ones(2)}
    opt = gx.freeze({"w": True}, inner=gx.adam(0.1))
    updates, _ = opt.update({"w": jnp.ones(2)}, opt.init(params), params)
    np.testing.assert_array_equal(updates["w"], np.zeros(2))
    with pytest.raises(TypeError, match="freeze: `mask` must be a tree of Python bools"):
        gx.freeze({"w": 0}, inner=gx.adam(0.1))


# ----------------------------------------------------------------------------------------------
# Under jit: one trace, stable state.


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize(
    "make",
    [
        lambda: gx.masked(gx.adam(1e-2), gx.decay_matrices_only),
        lambda: gx.multi_transform(
            {"m": gx.adamw(1e-2, mask=gx.decay_matrices_only), "s": gx.sgd(0.1, momentum=0.9)},
            {"enc": "m", "head": "s"},
        ),
        lambda: gx.freeze({"enc": True, "head": False}, inner=gx.adam(1e-2)),
        lambda: gx.set_to_zero(),
    ],
    ids=["masked", "multi_transform", "freeze", "set_to_zero"],
)
def test_wrappers_under_jit_trace_once_with_stable_state(make, dtype):
    params = jax.tree.map(lambda x: jnp.asarray(x, dtype), _params(dtype=np.float32))
    grads = jax.tree.map(lambda x: jnp.asarray(x, dtype), _grads(1, dtype=np.float32))
    new_params, _ = _assert_stable_under_jit(make(), params, grads)
    assert _signature(new_params) == _signature(params)
