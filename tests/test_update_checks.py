"""Every transformation's ``update`` and ``apply_updates`` check what they are given at trace
time: nothing is broadcast, nothing silently changes kind, and another optimizer's state is
named as such. Each error names the function, the leaf's path and both sides.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform as gx

PARAMS = {"a": jnp.ones(3), "b": jnp.ones((2, 2))}


def _with_a(value):
    return {"a": value, "b": jnp.ones((2, 2))}


_SCHEDULE = gx.linear_schedule(0.1, 0.01, 10)

# Every public transformation (and wrapper), built with typical arguments. ``stateful`` ones keep
# floating-point state of their gradients and so refuse integer gradients too.
TRANSFORMS = {
    "identity": (gx.identity, False),
    "stateless": (lambda: gx.stateless(lambda u, p: u), False),
    "chain": (lambda: gx.chain(gx.trace(0.9), gx.scale(2.0)), True),
    "named_chain": (lambda: gx.named_chain(("t", gx.trace(0.9)), ("s", gx.scale(2.0))), True),
    "scale": (lambda: gx.scale(2.0), False),
    "scale_by_learning_rate": (lambda: gx.scale_by_learning_rate(0.1), False),
    "scale_by_schedule": (lambda: gx.scale_by_schedule(_SCHEDULE), False),
    "set_to_zero": (gx.set_to_zero, False),
    "trace": (lambda: gx.trace(0.9), True),
    "ema": (lambda: gx.ema(0.9), True),
    "scale_by_adam": (gx.scale_by_adam, True),
    "scale_by_adamax": (gx.scale_by_adamax, True),
    "scale_by_nadam": (gx.scale_by_nadam, True),
    "scale_by_sparse_adam": (gx.scale_by_sparse_adam, True),
    "scale_by_rms": (gx.scale_by_rms, True),
    "scale_by_stddev": (gx.scale_by_stddev, True),
    "scale_by_rss": (gx.scale_by_rss, True),
    "scale_by_lion": (gx.scale_by_lion, True),
    "scale_by_amsgrad": (gx.scale_by_amsgrad, True),
    "scale_by_sign": (gx.scale_by_sign, False),
    "normalize_by_update_norm": (gx.normalize_by_update_norm, False),
    "scale_by_radam": (gx.scale_by_radam, True),
    "scale_by_adadelta": (gx.scale_by_adadelta, True),
    "scale_by_rprop": (lambda: gx.scale_by_rprop(0.1), True),
    "scale_by_asgd": (gx.scale_by_asgd, True),
    "scale_by_adafactor": (gx.scale_by_adafactor, True),
    # Factors PARAMS["b"] (2, 2); "a" (3,) keeps a full moment.
    "scale_by_factored_rms": (lambda: gx.scale_by_factored_rms(min_dim_size_to_factor=2), True),
    "scale_by_param_block_rms": (gx.scale_by_param_block_rms, False),
    "add_decayed_weights": (lambda: gx.add_decayed_weights(0.1), False),
    "add_l2": (lambda: gx.add_l2(0.1), False),
    "clip": (lambda: gx.clip(1.0), False),
    "clip_by_global_norm": (lambda: gx.clip_by_global_norm(1.0), False),
    "clip_by_block_rms": (lambda: gx.clip_by_block_rms(1.0), False),
    "adaptive_grad_clip": (lambda: gx.adaptive_grad_clip(0.1), False),
    "zero_nans": (gx.zero_nans, False),
    "split_real_and_imaginary": (lambda: gx.split_real_and_imaginary(gx.adam(0.1)), True),
    "reduce_on_plateau": (gx.reduce_on_plateau, False),
    "masked": (lambda: gx.masked(gx.adam(0.1), {"a": True, "b": True}), True),
    # Block size 1 cuts PARAMS["b"] (2, 2) into four blocks; the vector "a" is not cut.
    "blocked_matrices": (lambda: gx.blocked_matrices(gx.adam(0.1), block_size=1), True),
    "freeze": (lambda: gx.freeze({"a": False, "b": True}, inner=gx.adam(0.1)), True),
    "multi_transform": (
        lambda: gx.multi_transform({"x": gx.adam(0.1), "y": gx.sgd(0.1)}, {"a": "x", "b": "y"}),
        True,
    ),
    "MultiSteps": (lambda: gx.MultiSteps(gx.adam(0.1), every_k_schedule=2), True),
    "gradient_accumulation": (lambda: gx.gradient_accumulation(gx.adam(0.1), k=2), True),
    "inject_hyperparams": (lambda: gx.inject_hyperparams(gx.adam)(0.1), True),
    "inject_stateful_hyperparams": (lambda: gx.inject_stateful_hyperparams(gx.adam)(0.1), True),
    "stateless_with_tree_map": (lambda: gx.stateless_with_tree_map(lambda u, p: u), False),
    "with_extra_args_support": (lambda: gx.with_extra_args_support(gx.adam(0.1)), True),
    "join_transforms": (
        lambda: gx.join_transforms([gx.adam(0.1), gx.sgd(0.1)], boundaries=[2]),
        True,
    ),
    "ema_params": (lambda: gx.ema_params(0.9), True),
    "swa_params": (gx.swa_params, True),
    "lookahead": (lambda: gx.lookahead(gx.adam(0.1)), True),
    "apply_if_finite": (lambda: gx.apply_if_finite(gx.adam(0.1), 2), True),
    "dynamic_loss_scale": (lambda: gx.dynamic_loss_scale(gx.adam(0.1)), True),
    **{
        name: (lambda name=name: getattr(gx, name)(0.1), True)
        for name in (
            *("adam", "adamw", "amsgrad", "adamax", "nadam", "adagrad", "rmsprop"),
            *("radam", "adadelta", "rprop", "asgd", "nadamw", "adamaxw"),
        )
    },
    "sparse_adam": (lambda: gx.sparse_adam(0.1), True),
    "adafactor": (lambda: gx.adafactor(0.1), True),
    # Without momentum SGD keeps no state: -lr * g, computed in floating point.
    "sgd": (lambda: gx.sgd(0.1), False),
    "sgd_momentum": (lambda: gx.sgd(0.1, momentum=0.9), True),
    "lion": (lambda: gx.lion(0.1), True),
    # Muon for the matrix "b", AdamW for the vector "a".
    "muon_with_adamw": (lambda: gx.muon_with_adamw(0.1), True),
    "soap": (lambda: gx.soap(0.1), True),
    "scale_by_soap": (gx.scale_by_soap, True),
    "decay_after_step": (lambda: gx.decay_after_step(0.1, weight_decay=0.01), True),
    "shampoo": (lambda: gx.shampoo(0.1), True),
    "scale_by_shampoo": (gx.scale_by_shampoo, True),
    "lbfgs": (gx.lbfgs, True),
    "scale_by_lbfgs": (gx.scale_by_lbfgs, True),
    "scale_by_zoom_linesearch": (lambda: gx.scale_by_zoom_linesearch(5), True),
    "scale_by_backtracking_linesearch": (lambda: gx.scale_by_backtracking_linesearch(5), True),
    # Optax's catalogue.
    "scale_by_belief": (gx.scale_by_belief, True),
    "scale_by_adan": (gx.scale_by_adan, True),
    "scale_by_yogi": (gx.scale_by_yogi, True),
    "scale_by_novograd": (gx.scale_by_novograd, True),
    "scale_by_optimistic_gradient": (gx.scale_by_optimistic_gradient, True),
    "scale_by_sm3": (gx.scale_by_sm3, True),
    "scale_by_polyak": (gx.scale_by_polyak, False),
    "scale_by_trust_ratio": (gx.scale_by_trust_ratio, False),
    "scale_by_param_block_norm": (gx.scale_by_param_block_norm, False),
    "polyak_sgd": (gx.polyak_sgd, False),
    # add_noise's: Gaussian noise is drawn in the updates' dtype, floating updates only.
    "noisy_sgd": (lambda: gx.noisy_sgd(0.1), True),
    "sign_sgd": (lambda: gx.sign_sgd(0.1), False),
    "fromage": (lambda: gx.fromage(0.1), False),
    **{
        name: (lambda name=name: getattr(gx, name)(0.1), True)
        for name in (
            *("adabelief", "adan", "yogi", "novograd", "optimistic_adam"),
            *("optimistic_adam_v2", "optimistic_gradient_descent", "signum", "sm3", "lamb"),
        )
    },
    # Its momentum sees the trust ratio's output, floating point even for integer gradients.
    "lars": (lambda: gx.lars(0.1), False),
    # Issue 11: Optax's remaining transformations and wrappers.
    "apply_every": (lambda: gx.apply_every(2), False),
    "centralize": (gx.centralize, False),
    "keep_params_nonnegative": (gx.keep_params_nonnegative, False),
    # Gaussian noise is drawn in the updates' dtype: floating updates only.
    "add_noise": (lambda: gx.add_noise(0.01, 0.55, 0), True),
    "conditionally_mask": (lambda: gx.conditionally_mask(gx.adam(0.1), lambda s: s > 0), True),
    "conditionally_transform": (
        lambda: gx.conditionally_transform(gx.adam(0.1), lambda s: s > 0),
        True,
    ),
    "partition": (lambda: gx.partition({"x": gx.adam(0.1)}, {"a": "x", "b": "x"}), True),
    "selective_transform": (
        lambda: gx.selective_transform(gx.adam(0.1), freeze_mask={"a": False, "b": True}),
        True,
    ),
    "flatten": (lambda: gx.flatten(gx.adam(0.1)), True),
    "monitor": (lambda: gx.monitor({"m": lambda u: u}), False),
    "snapshot": (lambda: gx.snapshot("m", lambda u: u), False),
    "measure_with_ema": (lambda: gx.measure_with_ema(lambda u: u, 0.9), True),
    # optax.contrib's (tests/test_optax_contrib.py).
    "scale_by_distance_over_gradients": (gx.scale_by_distance_over_gradients, True),
    # GaLore projects the matrix "b" (2, 2) and passes the vector "a" to its Adam.
    "scale_by_galore": (lambda: gx.scale_by_galore(rank=1), True),
    "scale_by_adam_raw_eps": (gx.scale_by_adam_raw_eps, True),
    "galore_adamw": (lambda: gx.galore_adamw(0.1, rank=1, weight_decay=0.1), True),
    "galore": (lambda: gx.galore(0.1, rank=1, weight_decay=0.1), True),
    "scale_by_dog": (lambda: gx.scale_by_dog(("heuristic", 1e-6)), True),
    "scale_by_dowg": (gx.scale_by_dowg, True),
    "dog": (gx.dog, True),
    "dowg": (gx.dowg, True),
    "scale_by_schedule_free": (lambda: gx.scale_by_schedule_free(0.1), True),
    "schedule_free_sgd": (lambda: gx.schedule_free_sgd(0.1), True),
    "schedule_free_adamw": (lambda: gx.schedule_free_adamw(0.1), True),
    # The base optimizer checks the gradients first (a stateless base such as sgd would scale
    # integer ones into floating point before the averaging sees them, as cocob's link does).
    "schedule_free": (lambda: gx.schedule_free(gx.adam(0.1, b1=0.0), 0.1), True),
    "scale_by_ademamix": (gx.scale_by_ademamix, True),
    "ademamix": (lambda: gx.ademamix(0.1), True),
    "scale_by_simplified_ademamix": (gx.scale_by_simplified_ademamix, True),
    "simplified_ademamix": (lambda: gx.simplified_ademamix(0.1), True),
    "scale_by_adopt": (gx.scale_by_adopt, True),
    "adopt": (lambda: gx.adopt(0.1), True),
    "scale_by_acprop": (gx.scale_by_acprop, True),
    "acprop": (lambda: gx.acprop(0.1), True),
    "scale_by_cocob": (gx.scale_by_cocob, True),
    # The authors' learning-rate-free Adams (tests/test_learning_rate_free.py).
    "scale_by_prodigy": (gx.scale_by_prodigy, True),
    "scale_by_dadapt_adam": (gx.scale_by_dadapt_adam, True),
    "prodigy": (gx.prodigy, True),
    "dadapt_adamw": (gx.dadapt_adamw, True),
    # Its first link scales the gradients by the learning rate, which turns integer gradients
    # into floating-point ones before COCOB's state sees them (Optax's chain does the same).
    "cocob": (gx.cocob, False),
    "scale_by_madgrad": (lambda: gx.scale_by_madgrad(0.1), True),
    "madgrad": (lambda: gx.madgrad(0.1), True),
    "momo": (gx.momo, True),
    "momo_adam": (gx.momo_adam, True),
    # Issue 12: the frontier optimizers, as their authors' code.
    "scale_by_sophia": (gx.scale_by_sophia, True),
    "sophia": (lambda: gx.sophia(0.1), True),
    "mechanize": (lambda: gx.mechanize(gx.adam(0.1)), True),
    "sam": (lambda: gx.sam(gx.adam(0.1), gx.chain(gx.normalize(), gx.scale(0.05))), True),
    # Stateless: integer updates are normalised in floating point.
    "normalize": (gx.normalize, False),
    # It returns its estimate and ignores the updates' values (only checked against the params):
    # integer updates are accepted, as by the other transformations without gradient state.
    "hutchinson_estimator_diag_hessian": (gx.hutchinson_estimator_diag_hessian, False),
}


def _loss(params):
    return sum(jnp.sum(x * x) for x in jax.tree.leaves(params))


# What the updates of the transformations that need the loss take besides the gradients.
EXTRA_ARGS = {
    "reduce_on_plateau": {"value": 1.0},
    "momo": {"value": 1.0},
    "momo_adam": {"value": 1.0},
    "hutchinson_estimator_diag_hessian": {"obj_fn": _loss},
    "scale_by_polyak": {"value": 1.0},
    "polyak_sgd": {"value": 1.0},
    "lbfgs": {"value": 1.0, "value_and_grad_fn": jax.value_and_grad(_loss)},
    **{
        name: {"value": 1.0, "grad": PARAMS, "value_fn": _loss}
        for name in ("scale_by_zoom_linesearch", "scale_by_backtracking_linesearch")
    },
}
# Transformations of matrices only (Muon refuses the vector "a" of PARAMS): the same checks,
# run below with MATRIX_PARAMS, whose "a" is a matrix.
MATRIX_TRANSFORMS = {
    "muon": lambda: gx.muon(0.1),
    "scale_by_muon": gx.scale_by_muon,
}
MATRIX_PARAMS = {"a": jnp.ones((3, 2)), "b": jnp.ones((2, 2))}
# Transformations that need a mapped axis to run; their checks are the inner ones'.
NEEDS_AN_AXIS = {"cross_replica_mean", "shard_optimizer_state"}


# Public functions of those modules that read or build something else than a transformation.
NOT_TRANSFORMATIONS = {
    "apply_updates",
    # Functions of trees (Optax's utilities) and the DP-SGD transformations of per-example
    # gradients (a leading batch axis, so another shape than the params by design; their checks
    # are in tests/test_optax_wrappers.py).
    "skip_not_finite",
    "skip_large_updates",
    "incremental_update",
    "periodic_update",
    "unitwise_norm",
    "unitwise_clip",
    "per_example_global_norm_clip",
    "per_example_layer_norm_clip",
    "differentially_private_aggregate",
    "dpsgd",
    "microbatch",
    "init_empty_state",
    "all_finite",
    "averaged_params",
    "lookahead_slow_params",
    "schedule_free_eval_params",
    "current_loss_scale",
    "decay_matrices_only",
    "asgd_averaged_params",
    "muon_labels",
    "value_and_grad_from_state",
    # Sophia's Hessian estimate from a model's logits: a function of the params, not a
    # transformation.
    "gauss_newton_bartlett",
    "scale_gradient",  # an identity with a scaled backward pass, used inside a loss
}


def test_the_table_covers_every_public_transformation():
    modules = (
        "gradxform._base",
        "gradxform.transforms",
        "gradxform.optimizers",
        "gradxform.wrappers",
    )
    public = {
        name
        for name in gx.__all__
        if callable(getattr(gx, name))
        and getattr(getattr(gx, name), "__module__", "").startswith(modules)
        and (not isinstance(getattr(gx, name), type) or name == "MultiSteps")
    }
    assert "adam" in public and "masked" in public
    tables = set(TRANSFORMS) | set(MATRIX_TRANSFORMS)
    assert public - NOT_TRANSFORMATIONS - NEEDS_AN_AXIS <= tables, sorted(
        public - NOT_TRANSFORMATIONS - NEEDS_AN_AXIS - tables
    )


def _update(name, updates, state=None, params=PARAMS):
    transform = TRANSFORMS[name][0]()
    state = transform.init(PARAMS) if state is None else state
    return transform.update(updates, state, params, **EXTRA_ARGS.get(name, {}))


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
@pytest.mark.parametrize("shape", [(3, 1), (), (1, 3)])
def test_a_gradient_of_another_shape_is_never_broadcast(name, shape):
    with pytest.raises(ValueError) as info:
        _update(name, _with_a(jnp.ones(shape)))
    message = str(info.value)
    assert "['a']" in message and str(shape) in message and "(3,)" in message, message
    assert "broadcast" in message


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_a_complex_gradient_for_a_real_param_is_a_type_error(name):
    with pytest.raises(TypeError, match=r"\['a'\] is complex \(complex64\) but .* real"):
        _update(name, _with_a(jnp.ones(3, jnp.complex64)))


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
@pytest.mark.parametrize("dtype", [jnp.int32, jnp.bool_])
def test_integer_and_boolean_gradients(name, dtype):
    stateful = TRANSFORMS[name][1]
    grads = _with_a(jnp.ones(3, dtype))
    if stateful or dtype == jnp.bool_:
        with pytest.raises(TypeError, match=rf"\['a'\] has dtype {jnp.dtype(dtype)}"):
            _update(name, grads)
    else:
        # A transformation without gradient state takes integer updates, as Optax's do.
        updates, _ = _update(name, grads)
        assert updates["a"].shape == (3,)


def _matrix_update(name, a):
    transform = MATRIX_TRANSFORMS[name]()
    state = transform.init(MATRIX_PARAMS)
    return transform.update({**MATRIX_PARAMS, "a": a}, state, MATRIX_PARAMS)


@pytest.mark.parametrize("name", sorted(MATRIX_TRANSFORMS))
@pytest.mark.parametrize("shape", [(2, 3), (3,), (), (3, 2, 1)])
def test_matrix_transformations_never_broadcast(name, shape):
    with pytest.raises(ValueError) as info:
        _matrix_update(name, jnp.ones(shape))
    message = str(info.value)
    assert "['a']" in message and str(shape) in message and "(3, 2)" in message, message
    assert "broadcast" in message


@pytest.mark.parametrize("name", sorted(MATRIX_TRANSFORMS))
@pytest.mark.parametrize("dtype", [jnp.complex64, jnp.int32, jnp.bool_])
def test_matrix_transformations_refuse_complex_integer_and_boolean_gradients(name, dtype):
    expected = "is complex" if dtype == jnp.complex64 else f"has dtype {jnp.dtype(dtype)}"
    with pytest.raises(TypeError, match=rf"\['a'\] {expected}"):
        _matrix_update(name, jnp.ones((3, 2), dtype))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("adam", "ScaleByAdamState"),
        ("amsgrad", "ScaleByAmsgradState"),
        ("rmsprop", "ScaleByRmsState"),
        ("nadam", "ScaleByNadamState"),
        ("adamax", "ScaleByAdamaxState"),
        ("sparse_adam", "ScaleBySparseAdamState"),
        ("adagrad", "ScaleByRssState"),
        ("lion", "ScaleByLionState"),
        ("radam", "ScaleByAdamState"),
        ("adadelta", "ScaleByAdaDeltaState"),
        ("rprop", "ScaleByRpropState"),
    ],
)
def test_another_optimizers_state_names_both(name, expected):
    # sgd with momentum is a chain of the same length: (TraceState, EmptyState).
    sgd_state = gx.sgd(0.1, momentum=0.9).init(PARAMS)
    kwargs = {"weight_decay": 0.0} if name == "lion" else {}
    with pytest.raises(TypeError, match=rf"expected its state, a {expected}, got a TraceState"):
        getattr(gx, name)(0.1, **kwargs).update(PARAMS, sgd_state, PARAMS)


def test_wrappers_name_the_state_they_expect():
    adam_state = gx.adam(0.1).init(PARAMS)
    for opt, expected in [
        (gx.masked(gx.adam(0.1), {"a": True, "b": False}), "MaskedState"),
        (gx.MultiSteps(gx.adam(0.1), every_k_schedule=2), "MultiStepsState"),
        (gx.lookahead(gx.adam(0.1)), "LookaheadState"),
        (gx.apply_if_finite(gx.adam(0.1), 2), "ApplyIfFiniteState"),
        (gx.inject_hyperparams(gx.adam)(0.1), "InjectStatefulHyperparamsState"),
    ]:
        with pytest.raises(TypeError, match=rf"expected its state, a {expected}, got a tuple"):
            opt.update(PARAMS, adam_state, PARAMS)


# ----------------------------------------------------------------------------------------------
# apply_updates


@pytest.mark.parametrize("shape", [(3, 1), (), (1, 3), (6,)])
def test_apply_updates_never_broadcasts(shape):
    with pytest.raises(ValueError) as info:
        gx.apply_updates(PARAMS, _with_a(jnp.ones(shape)))
    message = str(info.value)
    assert message.startswith("apply_updates:") and "['a']" in message, message
    assert str(shape) in message and "(3,)" in message, message
    # Under jit too, at trace time.
    with pytest.raises(ValueError, match=r"apply_updates: the update at \['a'\]"):
        jax.jit(gx.apply_updates)(PARAMS, _with_a(jnp.ones(shape)))


def test_apply_updates_refuses_complex_updates_for_real_params_and_bools():
    with pytest.raises(TypeError, match=r"apply_updates: the update at \['a'\] is complex"):
        gx.apply_updates(PARAMS, _with_a(jnp.ones(3, jnp.complex64)))
    with pytest.raises(TypeError, match=r"apply_updates: the update at \['a'\] has dtype bool"):
        gx.apply_updates(PARAMS, _with_a(jnp.ones(3, bool)))
    complex_params = {"z": jnp.ones(2, jnp.complex64)}
    out = gx.apply_updates(complex_params, {"z": jnp.array([1j, 2.0], jnp.complex64)})
    np.testing.assert_array_equal(out["z"], [1 + 1j, 3 + 0j])


def test_apply_updates_keeps_none_params_and_none_updates():
    # Optax returns None for a None param leaf; adding to it used to raise `None + array`.
    params = {"a": None, "b": jnp.ones(2)}
    out = gx.apply_updates(params, {"a": None, "b": jnp.full(2, 0.5)})
    assert out["a"] is None
    np.testing.assert_array_equal(out["b"], [1.5, 1.5])
    out = gx.apply_updates({"a": None, "b": jnp.ones(2)}, {"a": jnp.ones(3), "b": None})
    assert out["a"] is None
    np.testing.assert_array_equal(out["b"], [1.0, 1.0])
