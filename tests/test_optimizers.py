"""The properties every optimizer of the table (``tests/optimizer_table.py``) must have.

Every test below runs over the whole table: convergence on a parabola and on Rosenbrock's
function, no recompilation on the second update, state dtypes and shapes that do not change
between ``init`` and ``update`` (float32, bfloat16, float64), the same numbers with and without
``jit``, and ``vmap``, ``pmap`` and ``shard_map`` giving what separate single-device runs give.
And the table itself must hold every optimizer that ``gradxform.__all__`` exports.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P
from optimizer_table import (
    COVERED,
    FACTORIES,
    OPTIMIZERS,
    every_optimizer,
    is_optimizer,
    loss_update,
    optimizers_in_all,
    representatives,
    skip_if_update_needs_the_loss,
    table,
)

import gradxform as gx

# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------


def test_table_covers_every_optimizer_in_all():
    exported = optimizers_in_all()
    # The detection finds today's optimizers and nothing else: not the transformations they
    # are built from, not the wrappers, not the package's helpers.
    assert {"sgd", "adam", "adamw", "lion"} <= set(exported)
    assert not any(is_optimizer(getattr(gx, n)) for n in ("scale_by_adam", "chain", "masked"))
    missing = sorted(set(exported) - set(FACTORIES) - set(COVERED))
    assert not missing, (
        f"gradxform.__all__ exports the optimizers {missing}, which no entry of "
        "tests/optimizer_table.py uses: add entries for them"
    )
    # The entries call the exported functions themselves, not private copies.
    for name, factory in {**FACTORIES, **COVERED}.items():
        assert exported.get(name) is factory, name
    assert not set(COVERED) & set(FACTORIES), "an optimizer with an entry needs no cover"
    # An optimizer covered by an entry runs inside it: the states it keeps on the parabola's
    # matrix are among the entry's states on the whole parabola.
    params = _as_jnp(PARABOLA_START)
    for entry in OPTIMIZERS:
        outer = _state_types(entry.make(entry.parabola_lr).init(params))
        for covered in entry.covers:
            inner = _state_types(covered(entry.parabola_lr).init({"w": params["w"]}))
            assert inner - {gx.EmptyState} and inner <= outer, (entry.id, covered.__name__)


def _state_types(state) -> set[type]:
    """The types of the named tuples (states) anywhere in an optimizer state."""
    if isinstance(state, tuple) and hasattr(state, "_fields"):
        return {type(state)}.union(*map(_state_types, state))
    if isinstance(state, tuple | list):
        return set().union(*map(_state_types, state))
    if isinstance(state, dict):
        return set().union(*map(_state_types, state.values()))
    return set()


# --------------------------------------------------------------------------------------------
# Problems and helpers
# --------------------------------------------------------------------------------------------

_RNG = np.random.default_rng(0)
# A small tree with a matrix and a vector, so that masks by rank (decay_matrices_only) split it.
PARABOLA_START = {
    "w": _RNG.uniform(-2, 2, (2, 3)).astype(np.float32),
    "b": _RNG.uniform(-2, 2, 3).astype(np.float32),
}
PARABOLA_TARGET = {
    "w": _RNG.uniform(-2, 2, (2, 3)).astype(np.float32),
    "b": _RNG.uniform(-2, 2, 3).astype(np.float32),
}
PARABOLA_STEPS = 6000
ROSENBROCK_STEPS = 20000


def _parabola_loss(params, target=None):
    """``sum_i |w_i - t_i|^2`` over the tree, in the params' dtype."""
    target = PARABOLA_TARGET if target is None else target
    diffs = jax.tree.map(lambda p, t: p - jnp.asarray(t, p.dtype), params, target)
    return sum(jnp.sum(d * d) for d in jax.tree.leaves(diffs))


def _parabola_minimum(l2: float):
    """With coupled L2 the loss is ``|w - t|^2 + l2 / 2 |w|^2``, minimal at ``2 t / (2 + l2)``."""
    return jax.tree.map(lambda t: 2 * t.astype(np.float64) / (2 + l2), PARABOLA_TARGET)


def _rosenbrock(xy):
    x, y = xy[0], xy[1]
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def _step(opt, loss, params, state, *loss_args, update_args=()):
    """One training step: gradient, optimizer update, ``apply_updates``. ``update_args``: what
    the entry's update needs besides the gradient (``Entry.update_args``)."""
    grads = jax.grad(loss)(params, *loss_args)
    updates, state = loss_update(opt, update_args, loss)(grads, state, params, *loss_args)
    return gx.apply_updates(params, updates), state


@functools.partial(jax.jit, static_argnums=(0, 1, 3, 4))
def _minimize(opt, loss, params, num_steps, update_args=()):
    """``num_steps`` training steps from ``opt.init(params)``, in one compiled scan."""

    def body(carry, _):
        return _step(opt, loss, *carry, update_args=update_args), None

    (params, _), _ = jax.lax.scan(body, (params, opt.init(params)), length=num_steps)
    return params


def _as_jnp(tree, dtype=None):
    return jax.tree.map(lambda x: jnp.asarray(x, dtype), tree)


def _distance(a, b) -> float:
    """The l2 distance between two trees, computed in float64 with NumPy."""
    squares = jax.tree.map(
        lambda x, y: np.sum((np.asarray(x, np.float64) - np.asarray(y, np.float64)) ** 2), a, b
    )
    return float(np.sqrt(sum(jax.tree.leaves(squares))))


def _signature(x) -> tuple:
    """``(shape, dtype, weak_type)``: what ``jit`` keys its cache on, for arrays and shapes."""
    aval = x if isinstance(x, jax.ShapeDtypeStruct) else jax.typeof(x)
    return tuple(aval.shape), jnp.dtype(aval.dtype), bool(aval.weak_type)


# --------------------------------------------------------------------------------------------
# Convergence
# --------------------------------------------------------------------------------------------

# Optimizers whose step shrinks with the gradient converge to the float32 floor: a few ulps
# of the O(1) coordinates, ~1e-6 over the 9 coordinates (measured: 0 to 7e-7, and 4e-6 for
# Adam and NAdam, with or without coupled decay, and 6e-6 for the composed chain, still
# converging at lr = 3e-3). 1e-4 is a 56000-fold reduction of the initial distance of 5.6.
CONVERGED_DISTANCE = 1e-4
# The others hover within O(lr) of the minimum: measured between 4000 and 10000 steps, at
# most 2.2 lr for Lion, 1.2 lr for RMSProp with weight decay, 0.5 lr for NAdam with decoupled
# decay, 0.4 lr for centered RMSProp, 0.08 lr for AdamW (masked or not), 0.016 lr for Adamax
# with weight decay, and 0.9 lr for Muon (the parabola's matrix in muon_with_adamw, at 6000
# steps). Their learning rates keep that radius at or below 5e-3, and the bound is 1e-2, a
# 550-fold reduction.
HOVER_DISTANCE = 1e-2


@table
def test_converges_on_parabola(entry):
    opt = entry.make(entry.parabola_lr)
    start = _as_jnp(PARABOLA_START)
    final = _minimize(opt, _parabola_loss, start, PARABOLA_STEPS, entry.update_args)
    minimum = _parabola_minimum(entry.l2)
    initial = _distance(start, minimum)
    distance = _distance(final, minimum)
    bound = HOVER_DISTANCE if entry.hovers else CONVERGED_DISTANCE
    assert distance < bound, f"distance {distance:.3g} from {initial:.3g}, bound {bound:g}"


# f(-1.2, 1) = 24.2. f <= 24.2e-5 puts the iterate in the valley within ~1e-2 of (1, 1) (f is
# ~ (1 - x)^2 along the valley floor); plain gradient descent, the slowest in the table, gets
# there only after ~10^4 steps, and every other entry within the same 2 * 10^4.
ROSENBROCK_REDUCTION = 1e5


@table
def test_converges_on_rosenbrock(entry):
    opt = entry.make(entry.rosenbrock_lr)
    start = jnp.array([-1.2, 1.0], jnp.float32)
    final = _minimize(opt, _rosenbrock, start, ROSENBROCK_STEPS, entry.update_args)
    initial, loss = float(_rosenbrock(start)), float(_rosenbrock(final))
    assert np.isfinite(loss)
    assert loss <= initial / ROSENBROCK_REDUCTION, f"loss {initial:.3g} -> {loss:.3g} at {final}"


# --------------------------------------------------------------------------------------------
# Compilation, dtypes and shapes
# --------------------------------------------------------------------------------------------


@table
def test_no_recompilation_on_second_update(entry):
    opt = entry.make(entry.parabola_lr)

    # A second trace means that the state update returned differs from init's in type.
    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(params, state):
        return _step(opt, _parabola_loss, params, state, update_args=entry.update_args)

    params = _as_jnp(PARABOLA_START)
    state = opt.init(params)
    for _ in range(3):
        params, state = step(params, state)
    # And no second compilation from one trace either (which other arguments' placements, say,
    # would cause): jit's cache holds one executable.
    assert step._cache_size() == 1


def _dtype_params(dtype):
    return _as_jnp(PARABOLA_START, dtype)


DTYPES = pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float64"])

# Entries whose state holds matrix-preconditioner statistics (Kronecker factors, eigenbases,
# projections, low-rank moments): leaves of shapes that are neither a param's nor scalar. The
# issue keeps such statistics in float32 for bf16/f16 params (their roots and decompositions
# lose everything in bf16) and never below the param's precision, so for these entries such a
# leaf must be promote_types(param dtype, float32) or wider; every other entry keeps the rule
# that only params' shapes, factored shapes and scalars may appear. (GaLore's projectors and
# projected moments have rules of their own in the test.)
MATRIX_PRECONDITIONED = {"shampoo", "soap", "galore_adamw"}


def _use_dtype(dtype, request):
    if dtype == "float64":
        request.getfixturevalue("x64")
    return jnp.dtype(dtype)


@table
@DTYPES
def test_state_dtypes_and_shapes_are_stable(entry, dtype, request):
    if entry.factory is gx.lbfgs:
        pytest.skip(
            "L-BFGS's state holds flat vectors of all params ((n,), (history_size, n)) in "
            "their widest dtype, not per-leaf moments: tests/test_lbfgs.py checks its dtypes"
        )
    dtype = _use_dtype(dtype, request)
    opt = entry.make(entry.parabola_lr)
    params = _dtype_params(dtype)
    state = opt.init(params)
    # eval_shape traces the update exactly as jit would, and returns what jit would cache on.
    step = functools.partial(_step, opt, _parabola_loss, update_args=entry.update_args)
    _, new_state = jax.eval_shape(step, params, state)

    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    param_shapes = {np.shape(p) for p in jax.tree.leaves(params)}
    # torch's Adafactor keeps a matrix's second moment as a row and a column statistic: the
    # param's shape with its last, or its second-to-last, axis reduced to 1.
    factored_shapes = {
        (*s[:-2], *reduced)
        for s in param_shapes
        if len(s) >= 2
        for reduced in ((s[-2], 1), (1, s[-1]))
    }
    for (path, before), after in zip(
        jax.tree_util.tree_leaves_with_path(state), jax.tree.leaves(new_state), strict=True
    ):
        where = jax.tree_util.keystr(path)
        shape, leaf_dtype, weak = _signature(before)
        assert _signature(after) == (shape, leaf_dtype, False), where
        assert not weak, f"{where} is weakly typed in init"
        if jnp.issubdtype(leaf_dtype, jnp.integer):
            assert leaf_dtype == jnp.int32, f"{where}: counters are int32, got {leaf_dtype}"
        elif ".projector[" in where:
            # GaLore's projectors (rank x cols or rows x rank, which may equal a param's
            # shape) are float32 for bf16/f16 params, the params' dtype otherwise.
            wanted = jnp.promote_types(dtype, jnp.float32)
            assert leaf_dtype == wanted, f"{where}: {leaf_dtype} for {dtype} params"
        elif shape in param_shapes or shape in factored_shapes:
            # Moments follow their param's dtype (bf16 params give bf16 moments).
            assert leaf_dtype == dtype, f"{where}: {leaf_dtype} for {dtype} params"
        elif entry.id.endswith("_stacked") and shape[1:] in param_shapes:
            # stack_by_shape: a moment is a stack of same-shape leaves' (group axis first).
            assert leaf_dtype == dtype, f"{where}: {leaf_dtype} for {dtype} params"
        elif ".base_optimizer_state." in where and len(shape) == 2:
            # GaLore's moments of a projected matrix (its projected shape), in the param's dtype.
            assert leaf_dtype == dtype, f"{where}: {leaf_dtype} for {dtype} params"
        elif entry.name in MATRIX_PRECONDITIONED and shape != ():
            # Preconditioner statistics (Kronecker factors, eigenbases, projections, low-rank
            # moments) have shapes of their own; eigh/QR/SVD and matrix roots lose too much in
            # 16 bits, so they are at least float32 (the issue: float32 for bf16 params).
            wanted = jnp.promote_types(dtype, jnp.float32)
            assert jnp.promote_types(leaf_dtype, wanted) == leaf_dtype, (
                f"{where}: {leaf_dtype} for {dtype} params, at least {wanted} wanted"
            )
        else:
            # Scalar bookkeeping (e.g. NAdam's momentum product) is never below float32.
            assert shape == () and jnp.finfo(leaf_dtype).bits >= 32, f"{where}: {leaf_dtype}"


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: gx.adam(1e-2, mu_dtype=jnp.float32), id="adam"),
        pytest.param(lambda: gx.adam(1e-2, amsgrad=True, mu_dtype=jnp.float32), id="amsgrad"),
        pytest.param(lambda: gx.adamw(1e-2, mu_dtype=jnp.float32), id="adamw"),
        pytest.param(lambda: gx.lion(1e-3, mu_dtype=jnp.float32), id="lion"),
    ],
)
def test_mu_dtype_keeps_a_float32_first_moment_for_bfloat16_params(make):
    opt = make()
    params = _dtype_params(jnp.bfloat16)
    state = opt.init(params)
    new_params, new_state = jax.eval_shape(
        functools.partial(_step, opt, _parabola_loss), params, state
    )
    for s in (state, new_state):
        (moments,) = [t for t in s if hasattr(t, "mu")]
        assert {_signature(m)[1:] for m in jax.tree.leaves(moments.mu)} == {
            (jnp.dtype(jnp.float32), False)
        }
        others = [getattr(moments, name) for name in moments._fields if name not in ("count", "mu")]
        assert {_signature(v)[1] for v in jax.tree.leaves(others)} <= {jnp.dtype(jnp.bfloat16)}
    assert {_signature(p)[1:] for p in jax.tree.leaves(new_params)} == {
        (jnp.dtype(jnp.bfloat16), False)
    }


# ADOPT's first update only initialises its second moment and is exactly 0 (Taniguchi et al.,
# 2024, Algorithm 1; Optax's too): its second update is the first that moves the params. SOAP's
# first step only gathers its Kronecker factors and their eigenbases (pytorch-optimizer's SOAP
# returns before updating the params, and applies no weight decay on it).
FIRST_UPDATE_IS_ZERO = {"adopt", "soap"}


@every_optimizer
@DTYPES
def test_apply_updates_keeps_param_dtype(entry, dtype, request):
    dtype = _use_dtype(dtype, request)
    opt = entry.make(entry.parabola_lr)
    params = _dtype_params(dtype)
    grads = jax.grad(_parabola_loss)(params)
    update = loss_update(opt, entry.update_args, _parabola_loss)
    updates, state = update(grads, opt.init(params), params)
    if entry.name in FIRST_UPDATE_IS_ZERO:
        assert not any(np.any(np.asarray(u)) for u in jax.tree.leaves(updates)), entry.id
        updates, _ = update(grads, state, params)
    new_params = gx.apply_updates(params, updates)
    # Updates come in the compute dtype (at least float32, so bf16 params get float32 updates
    # and are rounded once, by apply_updates); new params in the params' own dtype.
    update_dtype = jnp.result_type(dtype, jnp.float32)
    for name, tree, expected in (
        ("updates", updates, update_dtype),
        ("new params", new_params, dtype),
    ):
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
            where = f"{name}{jax.tree_util.keystr(path)}"
            assert _signature(leaf)[1:] == (expected, False), f"{where}: {_signature(leaf)}"
            assert np.all(np.isfinite(np.asarray(leaf, np.float64))), where
    # The first step moves every coordinate: the smallest is 1e-3 (Lion: lr * sign(g); the
    # adaptive methods' first step is ~lr too; |g| >= 0.017), far above float32's spacing of
    # 2.4e-7 at |p| < 2. In bfloat16 the spacing on [1, 2) is 2^-7, so such a step may round
    # away and "moved" is not checked.
    if dtype != jnp.bfloat16:
        moved = jax.tree.map(
            lambda a, b: np.all(np.asarray(a) != np.asarray(b)), params, new_params
        )
        assert all(jax.tree.leaves(moved))


# --------------------------------------------------------------------------------------------
# Transformations of the training step: jit, vmap, pmap, shard_map
# --------------------------------------------------------------------------------------------

# Three steps: the second and third start from a state that earlier updates wrote. Eager runs
# take them one by one; a compiled run takes them in one ``fori_loop`` (one traced step, so the
# program compiles faster than three unrolled steps; its carry must keep the state's types,
# which test_no_recompilation_on_second_update checks for every entry anyway).
NUM_STEPS = 3


def _train(opt, loss, params, *loss_args, update_args=()):
    """``NUM_STEPS`` training steps from ``opt.init(params)``, one by one; returns
    ``(params, state)``."""
    state = opt.init(params)
    for _ in range(NUM_STEPS):
        params, state = _step(opt, loss, params, state, *loss_args, update_args=update_args)
    return params, state


def _train_looped(opt, loss, params, *loss_args, update_args=()):
    """``_train`` with the steps in one ``lax.fori_loop``, for compiled runs."""

    def body(_, carry):
        return _step(opt, loss, *carry, *loss_args, update_args=update_args)

    return jax.lax.fori_loop(0, NUM_STEPS, body, (params, opt.init(params)))


@every_optimizer
def test_same_numbers_with_and_without_jit(entry, x64):
    opt = entry.make(entry.parabola_lr)
    params = _as_jnp(PARABOLA_START, jnp.float64)
    eager = _train(opt, _parabola_loss, params, update_args=entry.update_args)
    jitted = jax.jit(
        functools.partial(_train_looped, opt, _parabola_loss, update_args=entry.update_args)
    )(params)
    # Eager mode runs each primitive on its own, jit fuses them; XLA's CPU backend may then
    # contract a * b + c (the moment updates) into one fused multiply-add, which rounds once
    # instead of twice. Measured: at most one ulp of the O(1) terms (2.2e-16), which is 3e-15
    # relative where the terms nearly cancel; atol covers that, rtol allows ~45 ulps.
    chex.assert_trees_all_close(jitted, eager, rtol=1e-14, atol=1e-15, strict=True)


BATCH = 3


def _batched_starts():
    """``BATCH`` different starting points, stacked on a leading axis."""
    shifts = np.linspace(-0.5, 0.5, BATCH, dtype=np.float32)
    return jax.tree.map(lambda x: x[None] + shifts.reshape((-1,) + (1,) * x.ndim), PARABOLA_START)


@every_optimizer
def test_vmap_equals_separate_runs(entry):
    opt = entry.make(entry.parabola_lr)
    starts = _as_jnp(_batched_starts())
    run = functools.partial(_train_looped, opt, _parabola_loss, update_args=entry.update_args)

    single = jax.jit(run)
    separate = [single(jax.tree.map(lambda x, i=i: x[i], starts)) for i in range(BATCH)]
    expected = jax.tree.map(lambda *xs: np.stack(xs), *separate)
    batched = jax.jit(jax.vmap(run))(starts)
    # Element-wise arithmetic is identical under vmap; only reductions (the global norm of the
    # composed chain) could sum in another order, an ulp or two of float32 (measured: equal).
    chex.assert_trees_all_close(batched, expected, rtol=1e-6, atol=1e-7, strict=True)


NUM_DEVICES = 4


def _replica_targets():
    """A different target per replica: each replica sees its own data, hence gradients."""
    offsets = np.arange(NUM_DEVICES, dtype=np.float32) - 1.5
    return jax.tree.map(lambda t: t[None] + offsets.reshape((-1,) + (1,) * t.ndim), PARABOLA_TARGET)


@functools.cache
def _averaged_gradient_reference(entry):
    """The single-device run on the gradients averaged over replicas (shared by two tests)."""
    opt = entry.make(entry.parabola_lr)

    def mean_loss(params, targets):
        # The gradient of the mean loss is the mean of the replicas' gradients.
        losses = [
            _parabola_loss(params, jax.tree.map(lambda t, i=i: t[i], targets))
            for i in range(NUM_DEVICES)
        ]
        return sum(losses) / NUM_DEVICES

    run = jax.jit(functools.partial(_train_looped, opt, mean_loss, update_args=entry.update_args))
    return jax.device_get(run(_as_jnp(PARABOLA_START), _as_jnp(_replica_targets())))


def _data_parallel_train(opt, params, state, local_grad, local_loss, update_args):
    """``NUM_STEPS`` data-parallel steps: average the replicas' gradients (and, for an update
    that takes the loss value, their losses: the mean loss's value), then update."""
    update = loss_update(opt, update_args, lambda p: jax.lax.pmean(local_loss(p), "data"))

    def body(_, carry):
        params, state = carry
        grads = jax.lax.pmean(local_grad(params), "data")
        updates, state = update(grads, state, params)
        return gx.apply_updates(params, updates), state

    return jax.lax.fori_loop(0, NUM_STEPS, body, (params, state))


def _skip_if_update_evaluates_the_loss(entry):
    """MoMo takes the loss value, which the replicas average with their gradients. L-BFGS
    evaluates loss and gradient itself at the points its inner iterations visit, so the average
    would go inside its value_and_grad_fn (tried: pmap then aborts in XLA; under shard_map the
    "lbfgs" entry ends 4.7e-6 from the reference, past PARALLEL_RTOL)."""
    if "value_and_grad_fn" in entry.update_args:
        skip_if_update_needs_the_loss(
            entry,
            "L-BFGS evaluates the loss itself (its inner iterations), so the replicas' average "
            "would go inside its value_and_grad_fn, not in the gradients this test averages",
        )


def _devices():
    devices = jax.devices()
    if len(devices) < NUM_DEVICES:
        pytest.skip(f"needs {NUM_DEVICES} devices (tests/conftest.py forces 8 host devices)")
    return devices[:NUM_DEVICES]


# The replicas average their gradients with an all-reduce (sum, then divide by 4) while the
# reference differentiates the mean loss (each gradient divided by 4, then summed). Both round
# sums of per-replica gradients of up to ~9 (ulp 9.5e-7): the results differ by about an ulp
# of those terms, 2.4e-7 absolute after the division, also where the average is near 0.
# Measured after 3 steps: 1.2e-7 absolute (momentum of near-cancelling gradients) and 4 ulps
# relative (Adagrad's sum of squares). rtol is 8 ulps of float32.
PARALLEL_RTOL = 1e-6
PARALLEL_ATOL = 1e-6


# Representatives only: jax.pmap is jit of shard_map (jax/_src/pmap.py), and every entry runs
# under shard_map below, where the params are device-invariant (the stricter case).
@representatives
def test_pmap_equals_single_device_on_averaged_gradients(entry):
    _skip_if_update_evaluates_the_loss(entry)
    devices = _devices()
    opt = entry.make(entry.parabola_lr)

    def replica_train(params, state, target):
        local_loss = functools.partial(_parabola_loss, target=target)
        return _data_parallel_train(
            opt, params, state, jax.grad(local_loss), local_loss, entry.update_args
        )

    params = _as_jnp(PARABOLA_START)
    replicate = functools.partial(jax.tree.map, lambda x: jnp.stack([x] * NUM_DEVICES))
    run = jax.pmap(replica_train, axis_name="data", devices=devices)(
        replicate(params), replicate(opt.init(params)), _as_jnp(_replica_targets())
    )
    replicas = [jax.tree.map(lambda x, i=i: np.asarray(x[i]), run) for i in range(NUM_DEVICES)]
    chex.assert_trees_all_close(
        replicas[0],
        _averaged_gradient_reference(entry),
        rtol=PARALLEL_RTOL,
        atol=PARALLEL_ATOL,
        strict=True,
    )
    # Every replica applies the same averaged gradient to the same params, so they must stay
    # bitwise identical: any drift would silently desynchronise data-parallel training.
    for i in range(1, NUM_DEVICES):
        chex.assert_trees_all_equal(
            replicas[i], replicas[0], strict=True, custom_message=f"replica {i} vs replica 0"
        )


@every_optimizer
def test_shard_map_equals_single_device_on_averaged_gradients(entry):
    _skip_if_update_evaluates_the_loss(entry)
    mesh = Mesh(np.array(_devices()), ("data",))
    opt = entry.make(entry.parabola_lr)

    def shard_train(params, state, targets):
        target = jax.tree.map(lambda t: t[0], targets)  # this shard's slice of the targets

        def local_grad(params):
            # Under shard_map the gradient with respect to a replicated (device-invariant)
            # input is summed over the devices by autodiff itself. Casting the params to
            # device-varying first keeps each device's own gradient, averaged as under pmap.
            varying = jax.lax.pcast(params, "data", to="varying")
            return jax.grad(_parabola_loss)(varying, target)

        local_loss = functools.partial(_parabola_loss, target=target)
        return _data_parallel_train(opt, params, state, local_grad, local_loss, entry.update_args)

    sharded = jax.shard_map(
        shard_train, mesh=mesh, in_specs=(P(), P(), P("data")), out_specs=(P(), P())
    )
    params = _as_jnp(PARABOLA_START)
    run = jax.jit(sharded)(params, opt.init(params), _as_jnp(_replica_targets()))
    chex.assert_trees_all_close(
        run,
        _averaged_gradient_reference(entry),
        rtol=PARALLEL_RTOL,
        atol=PARALLEL_ATOL,
        strict=True,
    )
