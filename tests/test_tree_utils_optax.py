"""``gx.tree_utils`` against ``optax.tree_utils``: the same names, signatures and numbers.

Every function is run on the same trees by both libraries and the results compared exactly
(``assert_array_equal``, dtypes included): both evaluate one JAX expression per leaf in the
same order, so nothing may differ, not even the last bit. The trees cover dicts, NamedTuple
states, ``None`` leaves, bfloat16 and complex leaves, and empty trees.
"""

from __future__ import annotations

import inspect
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform as gx
from tests.references import require_optax

optax = require_optax()
otu = optax.tree_utils
gtu = gx.tree_utils


class Pair(NamedTuple):
    first: jax.Array
    second: dict


def _trees():
    rng = np.random.default_rng(0)
    normal = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)  # noqa: E731
    return {
        "dict": ({"w": normal(3, 2), "b": normal(2)}, {"w": normal(3, 2), "b": normal(2)}),
        "named_tuple": (
            Pair(normal(4), {"c": normal(2, 2)}),
            Pair(normal(4), {"c": normal(2, 2)}),
        ),
        "bf16": (
            {"w": normal(5).astype(jnp.bfloat16), "v": normal(3)},
            {"w": normal(5).astype(jnp.bfloat16), "v": normal(3)},
        ),
        "complex": (
            {"z": normal(3) + 1j * normal(3), "x": normal(2)},
            {"z": normal(3) - 2j * normal(3), "x": normal(2)},
        ),
        "none_leaves": ({"a": None, "b": normal(3)}, {"a": None, "b": normal(3)}),
    }


TREES = _trees()


def _same(ours, theirs):
    """Equal structure (``None`` leaves included), values, dtypes and shapes."""
    none = lambda x: x is None  # noqa: E731
    assert jax.tree.structure(ours, is_leaf=none) == jax.tree.structure(theirs, is_leaf=none)
    for a, b in zip(
        jax.tree.leaves(ours, is_leaf=none), jax.tree.leaves(theirs, is_leaf=none), strict=True
    ):
        if b is None:
            assert a is None
            continue
        assert jnp.result_type(a) == jnp.result_type(b), (jnp.result_type(a), jnp.result_type(b))
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_the_namespace_is_optaxs():
    optax_names = {n for n in dir(otu) if not n.startswith("_")}
    # Optax's deprecated aliases (tree_l2_norm, tree_scalar_mul, ...) are served by a module
    # __getattr__ and do not appear in dir(); its typing helpers are not functions of the API.
    assert set(gtu.__all__) == optax_names - {"functools", "typing"}
    for name in gtu.__all__:
        ours, theirs = getattr(gtu, name), getattr(otu, name)
        if inspect.isclass(theirs):
            continue
        assert list(inspect.signature(ours).parameters) == list(
            inspect.signature(theirs).parameters
        ), name
        kinds = [p.kind for p in inspect.signature(ours).parameters.values()]
        assert kinds == [p.kind for p in inspect.signature(theirs).parameters.values()], name


BINARY = ["tree_add", "tree_sub", "tree_mul", "tree_div", "tree_vdot", "tree_where"]
UNARY = [
    ("tree_sum", {}),
    ("tree_sum", {"associative_reduction": True}),
    ("tree_max", {}),
    ("tree_min", {}),
    ("tree_size", {}),
    ("tree_conj", {}),
    ("tree_real", {}),
    ("tree_norm", {}),
    ("tree_norm", {"squared": True}),
    ("tree_norm", {"ord": 1}),
    ("tree_norm", {"ord": 1, "squared": True}),
    ("tree_norm", {"ord": jnp.inf}),
    ("tree_norm", {"ord": "inf", "squared": True}),
    ("tree_batch_shape", {"shape": (2, 1)}),
    ("tree_zeros_like", {}),
    ("tree_zeros_like", {"dtype": jnp.int32}),
    ("tree_ones_like", {}),
    ("tree_full_like", {"fill_value": 0.25}),
    ("tree_full_like", {"fill_value": 3, "dtype": jnp.float16}),
    ("tree_clip", {"min_value": -0.5, "max_value": 0.3}),
    ("tree_clip", {"max_value": 0.1}),
    ("tree_cast", {"dtype": jnp.bfloat16}),
    ("tree_cast", {"dtype": None}),
    ("tree_dtype", {"mixed_dtype_handler": "promote"}),
    ("tree_dtype", {"mixed_dtype_handler": "highest"}),
    ("tree_dtype", {"mixed_dtype_handler": "lowest"}),
]
ORDERED = ("tree_max", "tree_min", "tree_clip")  # complex numbers have no order


# The dict and NamedTuple trees differ from these in structure only: they run in the binary
# tests, which also check that structure is kept.
UNARY_TREES = ["bf16", "complex", "none_leaves"]


@pytest.mark.parametrize("tree_id", TREES)
def test_binary_functions_match_optax(tree_id):
    # Every function of both libraries in one compiled program per tree (eagerly, each
    # operation compiled on its own and dominated the run time).
    x, y = TREES[tree_id]

    def both(x, y):
        out = {}
        for name in BINARY:
            args = (jnp.asarray(False), x, y) if name == "tree_where" else (x, y)
            out[name] = (getattr(gtu, name)(*args), getattr(otu, name)(*args))
        return out

    for name, (ours, theirs) in jax.jit(both)(x, y).items():
        try:
            _same(ours, theirs)
        except AssertionError as error:
            raise AssertionError(f"{name} on {tree_id}: {error}") from None


def test_tree_add_takes_more_trees():
    x, y = TREES["dict"]
    _same(gtu.tree_add(x, y, x, y), otu.tree_add(x, y, x, y))


# Their results are Python values (an int, a dtype), not arrays: run eagerly.
STATIC_RESULTS = ("tree_size", "tree_dtype")


def _unsupported(name, tree_id, kwargs):
    """The reason Optax's function is not defined on this tree, or None."""
    if tree_id == "complex" and name in ORDERED:
        return "complex leaves have no order (max, min, clip)"
    if tree_id == "complex" and name == "tree_cast" and kwargs["dtype"] is not None:
        return "JAX deprecates casting complex leaves to a real dtype"
    return None


@pytest.mark.parametrize("tree_id", UNARY_TREES)
def test_unary_functions_match_optax(tree_id):
    # Every array-valued function of both libraries in one compiled program per tree.
    x, _ = TREES[tree_id]
    cases = [
        (i, name, kwargs)
        for i, (name, kwargs) in enumerate(UNARY)
        if _unsupported(name, tree_id, kwargs) is None
    ]
    # Only the exclusions `_unsupported` documents: max, min, two clips and one cast, on complex.
    assert len(cases) == len(UNARY) - (5 if tree_id == "complex" else 0)

    def both(x):
        return {
            i: (getattr(gtu, name)(x, **kwargs), getattr(otu, name)(x, **kwargs))
            for i, name, kwargs in cases
            if name not in STATIC_RESULTS
        }

    compiled = jax.jit(both)(x)
    for i, name, kwargs in cases:
        pair = (
            (getattr(gtu, name)(x, **kwargs), getattr(otu, name)(x, **kwargs))
            if name in STATIC_RESULTS
            else compiled[i]
        )
        try:
            _same(*pair)
        except AssertionError as error:
            raise AssertionError(f"{name}({kwargs}) on {tree_id}: {error}") from None


@pytest.mark.parametrize("tree_id", ["dict", "bf16", "complex", "none_leaves"])
def test_scaling_and_casting_match_optax(tree_id):
    x, y = TREES[tree_id]
    for scalar in (0.5, jnp.asarray(-2.0)):
        _same(gtu.tree_scale(scalar, x), otu.tree_scale(scalar, x))
        _same(gtu.tree_add_scale(x, scalar, y), otu.tree_add_scale(x, scalar, y))
    other = jax.tree.map(lambda a: a.astype(jnp.complex128) if a.ndim == 1 else a, x)
    _same(gtu.tree_cast_like(x, other), otu.tree_cast_like(x, other))
    assert gtu.tree_allclose(x, y) == otu.tree_allclose(x, y)
    assert bool(gtu.tree_allclose(x, x)) and bool(otu.tree_allclose(x, x))
    assert gtu.tree_allclose(x, y, rtol=10.0, atol=10.0) == otu.tree_allclose(
        x, y, rtol=10.0, atol=10.0
    )


def test_empty_trees_match_optax():
    for tree in ({}, None, {"a": None}, {"e": jnp.zeros((0,))}):
        for name in ("tree_sum", "tree_max", "tree_min", "tree_size", "tree_norm", "tree_dtype"):
            _same(getattr(gtu, name)(tree), getattr(otu, name)(tree))
        _same(gtu.tree_vdot(tree, tree), otu.tree_vdot(tree, tree))


def test_errors_are_optaxs_kinds():
    with pytest.raises(ValueError, match="ord"):
        gtu.tree_norm({"a": jnp.ones(2)}, ord=3)
    with pytest.raises(ValueError):
        otu.tree_norm({"a": jnp.ones(2)}, ord=3)
    mixed = {"a": jnp.ones(2), "b": jnp.ones(2, jnp.int32)}
    with pytest.raises(ValueError, match=r"\['b'\]"):
        gtu.tree_dtype(mixed)
    with pytest.raises(ValueError):
        otu.tree_dtype(mixed)
    unordered = {"a": jnp.ones(2, jnp.int8), "b": jnp.ones(2, jnp.uint8)}  # both go to int16
    for handler in ("highest", "lowest"):
        with pytest.raises(ValueError, match="promotes"):
            gtu.tree_dtype(unordered, handler)
        with pytest.raises(ValueError):
            otu.tree_dtype(unordered, handler)
    _same(gtu.tree_dtype(unordered, "promote"), otu.tree_dtype(unordered, "promote"))


# ----------------------------------------------------------------------------------------------
# Moments, in float64: 100 updates of each moving average, every step compared.

STEPS = 100


MOMENT_RULES = {
    "update_moment_1": lambda tu, g, m: tu.tree_update_moment(g, m, 0.9, 1),
    "update_moment_2": lambda tu, g, m: tu.tree_update_moment(g, m, 0.999, 2),
    "infinity_moment": lambda tu, g, m: tu.tree_update_infinity_moment(g, m, 0.99, 1e-8),
    "per_elem_norm_2": lambda tu, g, m: tu.tree_update_moment_per_elem_norm(g, m, 0.95, 2),
    "per_elem_norm_3": lambda tu, g, m: tu.tree_update_moment_per_elem_norm(g, m, 0.95, 3),
}
# Optax's rule takes g**2 and max(|g|, .) of the raw leaf: these two run on real leaves only.
REAL_ONLY = ("infinity_moment", "update_moment_2")


def test_moments_match_optax_over_100_steps(x64):
    # Every rule, on real and complex gradients, for both libraries: 100 steps in one scan in
    # one compiled program (one per case took most of this module's time).
    rng = np.random.default_rng(3)
    real = rng.normal(size=(STEPS, 4, 3))
    grads = {"real": real, "complex": real + 1j * rng.normal(size=(STEPS, 4, 3))}
    grads = {kind: {"w": jnp.asarray(g), "b": jnp.asarray(g[:, 0])} for kind, g in grads.items()}
    cases = [
        (kind, rule)
        for kind in grads
        for rule in MOMENT_RULES
        if kind == "real" or rule not in REAL_ONLY
    ]

    def initial(kind, rule):
        zeros = jax.tree.map(lambda g: jnp.zeros_like(g[0]), grads[kind])
        return jax.tree.map(lambda z: z.real, zeros) if rule.startswith("per_elem") else zeros

    def step(moments, g):
        moments = {
            (lib, kind, rule): MOMENT_RULES[rule](tu, g[kind], moments[lib, kind, rule])
            for lib, tu in (("ours", gtu), ("theirs", otu))
            for kind, rule in cases
        }
        return moments, moments

    start = {(lib, k, r): initial(k, r) for lib in ("ours", "theirs") for k, r in cases}
    trajectory = jax.jit(lambda m, gs: jax.lax.scan(step, m, gs)[1])(start, grads)
    assert len(cases) == 8
    for kind, rule in cases:
        ours, theirs = trajectory["ours", kind, rule], trajectory["theirs", kind, rule]
        # One expression per leaf on both sides: equal up to rounding (rtol 1e-12 leaves
        # room for a reassociation by the compiler, which never happened here).
        jax.tree.map(
            lambda a, b, c=(kind, rule): np.testing.assert_allclose(
                a, b, rtol=1e-12, atol=0, err_msg=str(c)
            ),
            ours,
            theirs,
        )
        # A moment that did not move would pass trivially.
        assert float(jnp.abs(ours["w"][-1]).max()) > 1e-3, (kind, rule)


def test_moments_keep_none_updates_none():
    g = {"a": None, "b": jnp.ones(2)}
    m = {"a": None, "b": jnp.zeros(2)}
    for rule in MOMENT_RULES.values():
        _same(rule(gtu, g, m), rule(otu, g, m))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_bias_correction_matches_optax(dtype):
    moment = {"m": jnp.linspace(-1.0, 1.0, 5).astype(dtype), "n": None}
    for count in (1, 2, 10, 1000):
        count = jnp.asarray(count, jnp.int32)
        _same(gtu.tree_bias_correction(moment, 0.999, count), otu.tree_bias_correction(
            moment, 0.999, count
        ))  # fmt: skip


def test_top_level_aliases_are_the_tree_functions():
    assert gx.bias_correction is gtu.tree_bias_correction
    assert gx.update_moment is gtu.tree_update_moment
    assert gx.update_infinity_moment is gtu.tree_update_infinity_moment
    assert gx.update_moment_per_elem_norm is gtu.tree_update_moment_per_elem_norm
    assert gx.tree_map_params is gtu.tree_map_params


# ----------------------------------------------------------------------------------------------
# Random trees.


def test_random_trees_match_optax():
    target = {"w": jnp.ones((3, 2)), "b": jnp.ones(4, jnp.bfloat16)}
    # A sampler without `out_sharding`.
    sampler = lambda k, shape, dtype: 2 * jax.random.normal(k, shape, dtype)  # noqa: E731

    def draws(tu, key):
        return [
            tu.tree_unwrap_random_key_data(tu.tree_split_key_like(key, target)),
            tu.tree_random_like(key, target),
            tu.tree_random_like(key, target, dtype=jnp.float32),
            tu.tree_random_like(key, target, sampler),
        ]

    # Both libraries' draws in one compiled program (eagerly, each operation compiled apart).
    ours, theirs = jax.jit(lambda key: (draws(gtu, key), draws(otu, key)))(jax.random.key(7))
    for a, b in zip(ours, theirs, strict=True):
        _same(a, b)
    assert not np.array_equal(ours[1]["w"], ours[3]["w"])  # the sampler was used
    mixed = {"k": jax.random.key(1), "x": jnp.ones(2)}
    _same(gtu.tree_unwrap_random_key_data(mixed), otu.tree_unwrap_random_key_data(mixed))
