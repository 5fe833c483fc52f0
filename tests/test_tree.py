"""Tree arithmetic (gradxform/_tree.py) against NumPy float64 (or complex128) re-derivations.

Float64 tests run with ``jax_enable_x64`` (the ``x64`` fixture) so that the only difference from
NumPy is the order of a handful of roundings: tolerances of 1e-14 relative are then several
hundred ulps of slack. Tests of the float32 path use tolerances justified where they appear.
"""

from fractions import Fraction

import chex
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from gradxform import _tree

RTOL64 = 1e-14


def _tree_pair(rng, dtype=np.float64):
    """Two float64 NumPy trees of the same structure, with varied shapes and signs."""

    def leaf(shape):
        return (rng.standard_normal(shape) * rng.choice([0.1, 1.0, 30.0])).astype(dtype)

    a = {"w": leaf((3, 4)), "b": leaf((4,)), "nested": [leaf(()), leaf((2, 1))]}
    b = {"w": leaf((3, 4)), "b": leaf((4,)), "nested": [leaf(()), leaf((2, 1))]}
    return a, b


def _to_jax(tree):
    return jax.tree.map(jnp.asarray, tree)


# --- elementwise arithmetic -------------------------------------------------------------


@pytest.mark.parametrize(
    "name, reference",
    [
        ("tree_add", lambda a, b: a + b),
        ("tree_subtract", lambda a, b: a - b),
    ],
)
def test_add_subtract_match_numpy(x64, name, reference):
    a, b = _tree_pair(np.random.default_rng(0))
    got = getattr(_tree, name)(_to_jax(a), _to_jax(b))
    chex.assert_trees_all_close(got, jax.tree.map(reference, a, b), rtol=RTOL64)


def test_add_keeps_first_argument_dtype():
    # A bf16 tree plus a float32 tree stays bf16 (the moment/param keeps its dtype).
    a = {"w": jnp.array([1.0, 2.0], jnp.bfloat16)}
    b = {"w": jnp.array([0.5, 0.25], jnp.float32)}
    got = _tree.tree_add(a, b)
    assert got["w"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(got["w"], np.float64), [1.5, 2.25])
    assert _tree.tree_subtract(a, b)["w"].dtype == jnp.bfloat16


@pytest.mark.parametrize("scalar", [0.0, -1.5, 3.0e-3, 7.0])
def test_scale_matches_numpy(x64, scalar):
    a, _ = _tree_pair(np.random.default_rng(1))
    got = _tree.tree_scale(scalar, _to_jax(a))
    chex.assert_trees_all_close(got, jax.tree.map(lambda x: scalar * x, a), rtol=RTOL64)


def test_scale_by_float32_array_keeps_bf16_leaves():
    tree = {"w": jnp.array([1.0, -2.0, 4.0], jnp.bfloat16), "v": jnp.ones(2, jnp.float32)}
    got = _tree.tree_scale(jnp.float32(0.5), tree)
    assert got["w"].dtype == jnp.bfloat16 and got["v"].dtype == jnp.float32
    # Halving is exact in every binary format.
    np.testing.assert_array_equal(np.asarray(got["w"], np.float64), [0.5, -1.0, 2.0])


@pytest.mark.parametrize("scalar", [0.0, -0.3, 2.5])
def test_add_scaled_matches_numpy(x64, scalar):
    a, b = _tree_pair(np.random.default_rng(2))
    got = _tree.tree_add_scaled(_to_jax(a), scalar, _to_jax(b))
    chex.assert_trees_all_close(got, jax.tree.map(lambda x, y: x + scalar * y, a, b), rtol=RTOL64)


def test_add_scaled_computes_bf16_in_float32():
    # 256 + 1 * (1 + 2^-10): in float32 the sum is 257.00098, which rounds to the bf16 number
    # 258. Rounding the float32 leaf to bf16 first (1 + 2^-10 -> 1) would give the tie 257,
    # which rounds to even, 256.
    a = {"w": jnp.array([256.0], jnp.bfloat16)}
    b = {"w": jnp.array([1.0 + 2.0**-10], jnp.float32)}
    got = _tree.tree_add_scaled(a, jnp.float32(1.0), b)
    assert got["w"].dtype == jnp.bfloat16
    assert float(got["w"][0]) == 258.0


# --- reductions -----------------------------------------------------------------------


def test_vdot_real_matches_numpy(x64):
    a, b = _tree_pair(np.random.default_rng(3))
    got = _tree.tree_vdot(_to_jax(a), _to_jax(b))
    flat_a = np.concatenate([np.ravel(x) for x in jax.tree.leaves(a)])
    flat_b = np.concatenate([np.ravel(x) for x in jax.tree.leaves(b)])
    expected = np.vdot(flat_a, flat_b)
    # The sum of products cancels: compare with the sum of |products| as the scale.
    scale = np.sum(np.abs(flat_a * flat_b))
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(float(got), expected, rtol=0, atol=RTOL64 * scale)


def test_vdot_complex_conjugates_first_argument(x64):
    rng = np.random.default_rng(4)
    a = {"z": rng.standard_normal(5) + 1j * rng.standard_normal(5), "r": rng.standard_normal(3)}
    b = {"z": rng.standard_normal(5) + 1j * rng.standard_normal(5), "r": rng.standard_normal(3)}
    got = complex(_tree.tree_vdot(_to_jax(a), _to_jax(b)))
    expected = np.vdot(a["r"], b["r"]) + np.vdot(a["z"], b["z"])  # np.vdot conjugates a
    scale = np.sum(np.abs(a["z"] * b["z"])) + np.sum(np.abs(a["r"] * b["r"]))
    assert abs(got - expected) <= RTOL64 * scale
    # Closed form on one element: conj(1 + 2i) * (3 - i) = 1 - 7i.
    one = _tree.tree_vdot({"z": jnp.array([1 + 2j])}, {"z": jnp.array([3 - 1j])})
    assert complex(one) == 1 - 7j


def test_vdot_bf16_accumulates_in_float32():
    ones = {"w": jnp.ones(1001, jnp.bfloat16)}
    got = _tree.tree_vdot(ones, ones)
    # 1001 is not a bf16 number (it rounds to 1000); in float32 the sum is exact.
    assert got.dtype == jnp.float32
    assert float(got) == 1001.0


def test_squared_and_global_norm_match_numpy(x64):
    a, _ = _tree_pair(np.random.default_rng(5))
    expected_sq = sum(np.sum(x * x) for x in jax.tree.leaves(a))
    got_sq = _tree.tree_squared_norm(_to_jax(a))
    got = _tree.tree_global_norm(_to_jax(a))
    assert got_sq.dtype == jnp.float64 and got.dtype == jnp.float64
    np.testing.assert_allclose(float(got_sq), expected_sq, rtol=RTOL64)
    np.testing.assert_allclose(float(got), np.sqrt(expected_sq), rtol=RTOL64)


def test_global_norm_complex_uses_modulus(x64):
    rng = np.random.default_rng(6)
    tree = {"z": rng.standard_normal((2, 3)) + 1j * rng.standard_normal((2, 3)), "r": [-3.0]}
    expected_sq = np.sum(np.abs(tree["z"]) ** 2) + 9.0
    got_sq = _tree.tree_squared_norm(_to_jax(tree))
    # Real and float64: a complex "x * x" would give a complex result of the wrong value.
    assert got_sq.dtype == jnp.float64
    np.testing.assert_allclose(float(got_sq), expected_sq, rtol=RTOL64)
    np.testing.assert_allclose(
        float(_tree.tree_global_norm(_to_jax(tree))), np.sqrt(expected_sq), rtol=RTOL64
    )
    # Closed form: |3 + 4i| = 5.
    assert float(_tree.tree_global_norm({"z": jnp.array([3 + 4j], jnp.complex64)})) == 5.0


def test_complex64_norm_is_float32():
    got = _tree.tree_squared_norm({"z": jnp.array([1 + 1j, 2 - 2j], jnp.complex64)})
    assert got.dtype == jnp.float32
    assert float(got) == 10.0


def test_norm_bf16_accumulates_in_float32():
    tree = {"a": jnp.ones(1001, jnp.bfloat16), "b": jnp.full((3,), 2.0, jnp.bfloat16)}
    got = _tree.tree_squared_norm(tree)
    # A bf16 accumulator could not hold 1001 (or 1013); float32 holds both exactly.
    assert got.dtype == jnp.float32
    assert float(got) == 1001.0 + 12.0
    np.testing.assert_allclose(float(_tree.tree_global_norm(tree)), np.sqrt(1013.0), rtol=1e-7)


def test_norm_of_empty_tree_is_zero():
    assert float(_tree.tree_global_norm({})) == 0.0
    assert float(_tree.tree_squared_norm({"a": None})) == 0.0


# --- construction and casting -----------------------------------------------------------


@pytest.mark.parametrize("dtype", [None, jnp.bfloat16, jnp.float32])
def test_zeros_like(dtype):
    tree = {"a": jnp.ones((2, 3), jnp.float32), "b": jnp.ones(4, jnp.bfloat16), "c": None}
    got = _tree.tree_zeros_like(tree, dtype)
    assert got["c"] is None
    for name in ("a", "b"):
        assert got[name].shape == tree[name].shape
        assert got[name].dtype == (dtype or tree[name].dtype)
        assert not np.any(np.asarray(got[name], np.float64))


@pytest.mark.parametrize("dtype", [None, jnp.float32])
def test_full_like(dtype):
    tree = {"a": jnp.zeros((2,), jnp.bfloat16), "b": jnp.zeros((1, 3), jnp.float32)}
    got = _tree.tree_full_like(tree, 0.25, dtype)
    for name in ("a", "b"):
        assert got[name].shape == tree[name].shape
        assert got[name].dtype == (dtype or tree[name].dtype)
        np.testing.assert_array_equal(np.asarray(got[name], np.float64), 0.25)


def test_zeros_and_full_like_ignore_non_finite_values():
    # The result depends on the leaf's shape and dtype only, never on its values.
    tree = {"a": jnp.array([jnp.inf, -jnp.inf, jnp.nan, 1.0]), "i": jnp.array([1, 2], jnp.int32)}
    zeros = _tree.tree_zeros_like(tree)
    np.testing.assert_array_equal(np.asarray(zeros["a"]), [0.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(np.asarray(zeros["i"]), [0, 0])
    assert zeros["i"].dtype == jnp.int32
    full = jax.jit(lambda t: _tree.tree_full_like(t, 0.5, jnp.float32))(tree)
    np.testing.assert_array_equal(np.asarray(full["a"]), [0.5] * 4)
    np.testing.assert_array_equal(np.asarray(full["i"]), [0.5, 0.5])


def test_cast():
    tree = {"a": jnp.array([1.5, -2.25], jnp.float32), "b": jnp.array([3.0], jnp.bfloat16)}
    got = _tree.tree_cast(tree, jnp.bfloat16)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(got))
    np.testing.assert_array_equal(np.asarray(got["a"], np.float64), [1.5, -2.25])
    assert _tree.tree_cast(tree, None) is tree


def test_where_scalar_and_tree_condition():
    a = {"x": jnp.array([1.0, 2.0]), "y": jnp.array(3.0)}
    b = {"x": jnp.array([-1.0, -2.0]), "y": jnp.array(-3.0)}
    for condition, expected in [(True, a), (False, b), (jnp.array(False), b)]:
        chex.assert_trees_all_close(
            _tree.tree_where(condition, a, b), jax.tree.map(np.asarray, expected), rtol=RTOL64
        )
    per_leaf = {"x": jnp.array([True, False]), "y": jnp.array(False)}
    got = _tree.tree_where(per_leaf, a, b)
    np.testing.assert_array_equal(np.asarray(got["x"]), [1.0, -2.0])
    np.testing.assert_array_equal(np.asarray(got["y"]), -3.0)


# --- moments and counters ----------------------------------------------------------------


@pytest.mark.parametrize("decay", [0.0, 0.9, 0.999])
def test_moment_update_matches_numpy(x64, decay):
    m, v = _tree_pair(np.random.default_rng(7))
    got = _tree.tree_moment_update(_to_jax(m), _to_jax(v), decay)
    chex.assert_trees_all_close(
        got, jax.tree.map(lambda a, b: decay * a + (1 - decay) * b, m, v), rtol=RTOL64
    )


def test_moment_update_keeps_moment_dtype():
    rng = np.random.default_rng(8)
    m = rng.standard_normal(16)
    v = rng.standard_normal(16)
    got = _tree.tree_moment_update(
        {"m": jnp.asarray(m, jnp.bfloat16)}, {"m": jnp.asarray(v, jnp.float32)}, 0.9
    )["m"]
    assert got.dtype == jnp.bfloat16
    m_bf16 = np.asarray(m, ml_dtypes.bfloat16).astype(np.float64)
    v_f32 = np.asarray(v, np.float32).astype(np.float64)
    expected = 0.9 * m_bf16 + 0.1 * v_f32
    # One rounding to bf16 (8 significant bits): relative error <= 2^-8, plus float32 noise.
    np.testing.assert_allclose(np.asarray(got, np.float64), expected, rtol=2.0**-8 + 1e-6)


def test_moment_update_complex(x64):
    rng = np.random.default_rng(9)
    m = rng.standard_normal(4) + 1j * rng.standard_normal(4)
    v = rng.standard_normal(4) + 1j * rng.standard_normal(4)
    got = _tree.tree_moment_update({"m": jnp.asarray(m)}, {"m": jnp.asarray(v)}, 0.75)["m"]
    assert got.dtype == jnp.complex128
    np.testing.assert_allclose(np.asarray(got), 0.75 * m + 0.25 * v, rtol=RTOL64)


def _exact_correction(decay, count):
    """1 - decay^count for the binary ``decay``, correctly rounded to float64."""
    return float(1 - Fraction(decay) ** count)


@pytest.mark.parametrize("decay", [0.0, 0.5, 0.9, 0.999])
@pytest.mark.parametrize("count", [1, 2, 10, 1000])
def test_bias_correction_matches_exact_value(x64, decay, count):
    # To a few float64 ulps of the correctly rounded value. Computing 1 - decay^count by
    # subtraction misses this for decay near 1: an ulp of decay^count is up to 1e-13 of the
    # result when decay = 0.999 (and 1e-4 in float32).
    expected = _exact_correction(decay, count)
    correction = _tree.bias_correction(decay, jnp.array(count, jnp.int32))
    assert correction.dtype == jnp.float64
    np.testing.assert_allclose(float(correction), expected, rtol=RTOL64)
    moments = {"m": jnp.array([0.3, -2.0]), "n": jnp.array(5.0)}
    got = _tree.tree_bias_correction(moments, decay, jnp.array(count, jnp.int32))
    chex.assert_trees_all_close(
        got, {"m": np.array([0.3, -2.0]) / expected, "n": 5.0 / expected}, rtol=RTOL64
    )


@pytest.mark.parametrize("decay", [0.9, 0.99, 0.999, 0.9999])
@pytest.mark.parametrize("count", [1, 2, 10, 1000])
def test_bias_correction_float32_accuracy(decay, count):
    # The moments use the weight (1 - decay) rounded once to float32; their correction must be
    # as accurate (a few float32 ulps, 1e-6), or Adam's first step is not sign(g) and a
    # debiased average of a constant is not that constant. Subtracting float32(decay)^count
    # from 1 is off by up to 2e-4 here.
    correction = _tree.bias_correction(decay, jnp.array(count, jnp.int32))
    assert correction.dtype == jnp.float32
    np.testing.assert_allclose(float(correction), 1 - decay**count, rtol=1e-6)


def test_bias_correction_keeps_moment_dtype():
    got = _tree.tree_bias_correction(
        {"m": jnp.array([0.1], jnp.bfloat16)}, 0.9, jnp.array(1, jnp.int32)
    )["m"]
    assert got.dtype == jnp.bfloat16
    # 0.1 in bf16, divided by 0.1 (float32), rounded to bf16: 1 within bf16 precision.
    np.testing.assert_allclose(np.asarray(got, np.float64), [1.0], rtol=2.0**-8)


def test_safe_increment_counts_and_saturates():
    count = jnp.zeros([], jnp.int32)
    for expected in range(1, 4):
        count = _tree.safe_increment(count)
        assert count.dtype == jnp.int32 and int(count) == expected
    top = np.iinfo(np.int32).max
    near = jnp.array(top - 1, jnp.int32)
    assert int(_tree.safe_increment(near)) == top
    saturated = _tree.safe_increment(jnp.array(top, jnp.int32))
    assert saturated.dtype == jnp.int32 and int(saturated) == top  # not wrapped to -2^31
    # Also under jit, where the compiler sees the comparison.
    assert int(jax.jit(_tree.safe_increment)(jnp.array(top, jnp.int32))) == top


# --- checks -------------------------------------------------------------------------------


def test_check_same_structure_accepts_equal_structures():
    a = {"w": jnp.ones(2), "b": [jnp.ones(1), jnp.ones(3)]}
    _tree.check_same_structure(a, jax.tree.map(lambda x: x * 2, a), "params", "updates")


def test_check_same_structure_message_shows_both_structures():
    expected = {"w": jnp.ones(2), "b": jnp.ones(3)}
    got = {"w": jnp.ones(2), "bias": jnp.ones(3)}
    with pytest.raises(ValueError) as info:
        _tree.check_same_structure(expected, got, "params", "updates")
    message = str(info.value)
    assert str(jax.tree.structure(expected)) in message
    assert str(jax.tree.structure(got)) in message
    assert "params" in message and "updates" in message


def test_check_same_structure_none_is_leaf():
    params = {"w": jnp.ones(2), "b": None}
    updates = {"w": jnp.ones(2), "b": jnp.ones(1)}
    # By default None is an empty subtree, so these structures differ ...
    with pytest.raises(ValueError):
        _tree.check_same_structure(params, updates, "params", "updates")
    # ... and with none_is_leaf a None stands for a leaf.
    _tree.check_same_structure(params, updates, "params", "updates", none_is_leaf=True)


@pytest.mark.parametrize(
    "leaf", [jnp.ones(2), jnp.ones(2, jnp.bfloat16), jnp.ones(2, jnp.complex64), 1.5, None]
)
def test_check_inexact_leaves_accepts_floating_and_complex(leaf):
    _tree.check_inexact_leaves({"a": {"b": leaf}}, "who")


@pytest.mark.parametrize(
    "leaf", [jnp.ones(2, jnp.int32), jnp.ones(2, jnp.bool_), jnp.ones(2, jnp.uint8), 3]
)
def test_check_inexact_leaves_rejects_integers_and_booleans(leaf):
    params = {"layer": {"kernel": jnp.ones(2), "step": leaf}}
    with pytest.raises(TypeError) as info:
        _tree.check_inexact_leaves(params, "my_transform")
    message = str(info.value)
    assert "my_transform" in message
    assert "['layer']['step']" in message
    assert str(jnp.result_type(leaf)) in message


def test_check_inexact_leaves_names_root_leaf():
    with pytest.raises(TypeError, match="<root>"):
        _tree.check_inexact_leaves(jnp.ones(2, jnp.int32), "who")


# --- dtype rules ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dtypes, expected",
    [
        ((jnp.bfloat16,), jnp.float32),
        ((jnp.float16,), jnp.float32),
        ((jnp.float32,), jnp.float32),
        ((jnp.bfloat16, jnp.float16), jnp.float32),
        ((jnp.complex64,), jnp.complex64),
        ((jnp.bfloat16, jnp.complex64), jnp.complex64),
    ],
)
def test_compute_dtype(dtypes, expected):
    assert _tree.compute_dtype(*dtypes) == jnp.dtype(expected)


@pytest.mark.parametrize(
    "dtypes, expected",
    [
        ((jnp.float64,), jnp.float64),
        ((jnp.float64, jnp.bfloat16), jnp.float64),
        ((jnp.float32, jnp.float64), jnp.float64),
        ((jnp.complex128,), jnp.complex128),
        ((jnp.complex64,), jnp.complex64),
        ((jnp.bfloat16,), jnp.float32),
    ],
)
def test_compute_dtype_x64(x64, dtypes, expected):
    assert _tree.compute_dtype(*dtypes) == jnp.dtype(expected)


def test_default_and_real_dtype(x64):
    assert _tree.default_float_dtype() == jnp.float64
    assert _tree.real_dtype(jnp.complex128) == jnp.float64
    assert _tree.real_dtype(jnp.complex64) == jnp.float32
    assert _tree.real_dtype(jnp.bfloat16) == jnp.bfloat16


def test_default_float_dtype_without_x64():
    assert _tree.default_float_dtype() == jnp.float32


# --- tree_map_multi --------------------------------------------------------------------------


def test_map_multi_returns_one_tree_per_output():
    a = {"x": jnp.array([1.0, 2.0]), "y": [jnp.array(3.0)]}
    b = {"x": jnp.array([10.0, 20.0]), "y": [jnp.array(30.0)]}
    total, difference = _tree.tree_map_multi(lambda p, q: (p + q, q - p), 2, a, b)
    np.testing.assert_array_equal(np.asarray(total["x"]), [11.0, 22.0])
    np.testing.assert_array_equal(np.asarray(difference["y"][0]), 27.0)
    empty = _tree.tree_map_multi(lambda p: (p, p), 2, {})
    assert empty == ({}, {})
