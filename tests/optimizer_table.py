"""The one table of optimizers that every shared property test runs over.

Each ``Entry`` is one configuration of an optimizer: a factory (a public optimizer of
``gradxform``, or a chain built the way the optimizers are), keyword arguments, and the learning
rates that make it converge on the two problems of ``test_optimizers.py``. Between them the
entries switch on momentum, Nesterov, dampening, coupled and decoupled weight decay, a decay
mask, centering, AMSGrad, Adagrad's ``lr_decay`` and initial accumulator, and factored second
moments (Adafactor); dtype options (``mu_dtype``) have their own tests, as the table's dtype
test expects every moment in its param's dtype.

Tests import it as a sibling module (``from optimizer_table import table``), as they do
``references``: ``@table`` runs a test once per entry. ``test_table_covers_every_optimizer_in_all``
(in ``test_optimizers.py``) fails when ``gradxform.__all__`` gains an optimizer that no entry
uses. Tests that keep data per optimizer (valid ranges, invalid arguments) key it
by the names in ``FACTORIES`` and check with ``assert_covers_every_optimizer`` that none of the
table's optimizers is missing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import pytest

import gradxform as gx

OPTIMIZERS_PACKAGE = "gradxform.optimizers"


def is_optimizer(obj) -> bool:
    """True for what ``gradxform.optimizers`` defines: the optimizers (each a ``chain``)."""
    module = getattr(obj, "__module__", None) or ""
    return module == OPTIMIZERS_PACKAGE or module.startswith(OPTIMIZERS_PACKAGE + ".")


def optimizers_in_all() -> dict[str, Callable[..., gx.GradientTransformation]]:
    """``{name: function}`` for every optimizer that ``gradxform.__all__`` exports."""
    return {name: getattr(gx, name) for name in gx.__all__ if is_optimizer(getattr(gx, name))}


# eq=False: entries compare and hash by identity (``kwargs`` is a dict), so that a test may cache
# results per entry.
@dataclasses.dataclass(frozen=True, eq=False)
class Entry:
    """An optimizer configuration of the table and the learning rates that make it converge.

    ``make(learning_rate)`` is ``factory(learning_rate, **kwargs)``; ``factory`` and ``kwargs``
    are kept apart so that a test can also wrap the factory (``inject_hyperparams(factory)``).
    ``hovers`` marks optimizers whose step does not shrink with the gradient near the minimum of
    the parabola, so they end within O(lr) of it rather than at the float32 floor (see
    ``test_converges_on_parabola``). ``l2`` is the coupled weight decay, which moves the
    parabola's minimum (see ``_parabola_minimum`` there). ``covers`` lists the public
    optimizers this entry runs inside its factory, on the leaves they take. ``update_args``
    names what ``update`` needs besides ``(grads, state, params)``, from :data:`UPDATE_ARGS` (L-BFGS
    evaluates the loss itself): tests that have the loss pass them through :func:`loss_update`,
    and tests that feed given gradients skip such an entry with
    :func:`skip_if_update_needs_the_loss`, saying why.
    """

    id: str
    factory: Callable[..., gx.GradientTransformation]
    kwargs: Mapping[str, Any]
    parabola_lr: float
    rosenbrock_lr: float | Callable[[Any], Any]  # a schedule where a constant rate cannot do
    hovers: bool = False
    l2: float = 0.0
    # Public optimizers that ``factory`` runs on some of the leaves and that cannot take the
    # table's problems themselves (see ``COVERED``).
    covers: tuple[Callable[..., gx.GradientTransformation], ...] = ()
    update_args: tuple[str, ...] = ()

    def make(self, learning_rate: float) -> gx.GradientTransformation:
        return self.factory(learning_rate, **self.kwargs)

    @property
    def name(self) -> str:
        """The factory's name: the public optimizer's (``"sgd"``), or a chain's."""
        return self.factory.__name__


# What an update may need besides (grads, state, params): from the loss, ``value`` (the loss at
# the params) and ``value_and_grad_fn`` (``params -> (loss, grads)``); from the gradients,
# ``hessian``, Sophia's diagonal Hessian estimate, here ``g * g`` (the Gauss-Newton-Bartlett
# estimate ``B g_hat^2`` with B = 1 and the sampled label the true one), given at every step.
UPDATE_ARGS = ("value", "value_and_grad_fn", "hessian")
# Those of them that need the loss: tests that feed gradients of no loss skip such entries.
LOSS_ARGS = ("value", "value_and_grad_fn")


def loss_update(opt: gx.GradientTransformation, update_args: tuple[str, ...], loss: Callable):
    """``update(grads, state, params, *loss_args)``: ``opt.update`` given, besides, the
    arguments ``update_args`` names, computed from ``loss(params, *loss_args)``. Without
    ``update_args`` it is ``opt.update`` itself."""
    unknown = set(update_args) - set(UPDATE_ARGS)
    assert not unknown, f"unknown update arguments {sorted(unknown)}; known: {UPDATE_ARGS}"

    def update(grads, state, params, *loss_args):
        extra = {}
        if "value" in update_args:
            extra["value"] = loss(params, *loss_args)
        if "value_and_grad_fn" in update_args:
            extra["value_and_grad_fn"] = lambda p: jax.value_and_grad(loss)(p, *loss_args)
        if "hessian" in update_args:
            extra["hessian"] = jax.tree.map(lambda g: g * g, grads)
        return opt.update(grads, state, params, **extra)

    return update


def needs_the_loss(entry: Entry) -> bool:
    """Whether the entry's update needs the loss (:data:`LOSS_ARGS`), not only gradients."""
    return bool(set(entry.update_args) & set(LOSS_ARGS))


def skip_if_update_needs_the_loss(entry: Entry, why: str) -> None:
    """Skips the test for an entry whose update needs the loss, saying why. (Sophia's
    ``hessian`` is optional: given gradients alone it runs without an estimate.)"""
    if needs_the_loss(entry):
        needed = [arg for arg in entry.update_args if arg in LOSS_ARGS]
        pytest.skip(f"{entry.id}: its update needs {', '.join(needed)}; {why}")


def composed_chain(learning_rate: float) -> gx.GradientTransformation:
    """Adam with clipping and decoupled decay built from transformations, as a user would."""
    return gx.chain(
        gx.clip_by_global_norm(1.0),
        gx.scale_by_adam(),
        gx.add_decayed_weights(1e-4),
        gx.scale_by_learning_rate(learning_rate),
    )


# Learning rates (parabola, Rosenbrock).
# The parabola has Hessian 2I, so gradient descent contracts the error by |1 - 2 lr| per step:
# lr = 0.1 gives 0.8 per step, at the float32 floor long before the end. Adaptive methods move
# about lr per coordinate per step whatever the gradient's size, so the initial offsets (up to
# 3.5 per coordinate) take at least 3.5 / lr steps: lr >= 1e-3 for PARABOLA_STEPS = 6000.
# Rosenbrock's Hessian at (1, 1) has eigenvalues 1001.6 and 0.40: plain gradient descent is
# only stable for lr < 2 / 1001.6 = 2.0e-3, heavy-ball momentum 0.9 for lr < 2 (1 + 0.9) /
# 1001.6 = 3.8e-3 and Nesterov's for lr < 2 (1 + 0.9) / (1 + 2 * 0.9) / 1001.6 = 1.4e-3, so
# the SGD family uses 1e-3, where the slow direction still contracts by 1 - 4e-4 per step.
# The adaptive methods need lr * steps well above the 3.4 arc length of the valley y = x^2
# from x = -1.2 to 1 (lr >> 1.7e-4 for 2e4 steps). Where their step does not shrink near the
# minimum (RMSProp's and Lion's stay ~lr), the iterate keeps an offset of ~lr across the
# valley, whose curvature is ~1000: that costs ~500 lr^2, 4.5e-5 at lr = 3e-4, under the bar.
#
# Coupled weight decay (``l2``) is 1e-4: it moves Rosenbrock's minimum by ~l2 |x*| / 0.40 =
# 3.5e-4 along the slow direction, which costs f ~ 0.2 (3.5e-4)^2 = 2.5e-8, far under the
# bar of 2.4e-4 (1e-2 would cost about the bar itself); the parabola test measures the distance
# to the moved minimum.
OPTIMIZERS: tuple[Entry, ...] = (
    Entry("sgd", gx.sgd, {}, 0.1, 1e-3),
    Entry("sgd_momentum", gx.sgd, {"momentum": 0.9}, 0.1, 1e-3),
    Entry("sgd_nesterov", gx.sgd, {"momentum": 0.9, "nesterov": True}, 0.1, 1e-3),
    Entry("sgd_dampening", gx.sgd, {"momentum": 0.9, "dampening": 0.5}, 0.1, 1e-3),
    Entry("sgd_weight_decay", gx.sgd, {"momentum": 0.9, "weight_decay": 1e-4}, 0.1, 1e-3, l2=1e-4),
    # Adagrad's rate already falls as 1 / sqrt(sum g^2), and Rosenbrock's first gradients are
    # ~200, hence lr = 1; lr_decay = 1e-3 would divide it by another 21 by step 20000 and stall
    # it in the valley, 1e-4 by 3.
    Entry("adagrad", gx.adagrad, {"lr_decay": 1e-4}, 1.0, 1.0),
    Entry(
        "adagrad_weight_decay",
        gx.adagrad,
        {"initial_accumulator_value": 0.1, "weight_decay": 1e-4},
        1.0,
        1.0,
        l2=1e-4,
    ),
    Entry("rmsprop", gx.rmsprop, {}, 1e-2, 3e-4),
    # Plain RMSProp lands exactly on the parabola's float32 minimum, where the gradient is 0.
    # With weight decay the minimum is not representable, the gradient never vanishes, and
    # the step g / sqrt(v) stays O(lr): it hovers (measured: 1.2 lr), hence the smaller lr.
    Entry(
        "rmsprop_weight_decay",
        gx.rmsprop,
        {"weight_decay": 1e-4},
        3e-3,
        3e-4,
        hovers=True,
        l2=1e-4,
    ),
    # Centered RMSProp divides by the spread of recent gradients, which vanishes as the
    # gradient settles, so its steps stay O(lr) near a minimum.
    Entry(
        "rmsprop_centered",
        gx.rmsprop,
        {"centered": True, "momentum": 0.9},
        3e-3,
        3e-4,
        hovers=True,
    ),
    # Once Adam reaches the float32 floor its second moment keeps decaying (b2 = 0.999) until
    # rounding noise in the gradient is amplified into steps of ~lr, in bursts: at lr = 3e-2
    # they appear from ~8000 steps on the parabola, at lr = 1e-2 from ~15000 on Rosenbrock.
    # lr = 3e-3 and 1e-3 stay clear of them for 12000 and 30000 steps.
    Entry("adam", gx.adam, {}, 3e-3, 1e-3),
    Entry("adam_weight_decay", gx.adam, {"weight_decay": 1e-4}, 3e-3, 1e-3, l2=1e-4),
    # AMSGrad's running maximum of v never decays, so no bursts; but on Rosenbrock it keeps
    # the first gradients (~200) in the denominator, hence the larger lr.
    Entry("adam_amsgrad", gx.adam, {"amsgrad": True}, 0.1, 3e-2),
    Entry("amsgrad", gx.amsgrad, {}, 0.1, 3e-2),
    # Decoupled decay: near the minimum Adam's direction m / sqrt(v) tends to sign(g), which
    # the decay term weight_decay * p cannot balance, so the iterate hovers within O(lr).
    Entry("adamw", gx.adamw, {}, 3e-2, 1e-3, hovers=True),
    Entry(
        "adamw_masked",
        gx.adamw,
        {"weight_decay": 1e-2, "mask": gx.decay_matrices_only},
        3e-2,
        1e-3,
        hovers=True,
    ),
    Entry("adamax", gx.adamax, {}, 0.1, 1e-2),
    # Adamax too lands on the exact minimum without decay. With it, once the iterate is at the
    # float32 floor its u = max(b2 u, |g|) decays and rounding noise is amplified into bursts
    # as in Adam (measured from 6000 steps on: up to 0.016 lr), so it counts as hovering.
    Entry(
        "adamax_weight_decay",
        gx.adamax,
        {"weight_decay": 1e-4},
        0.1,
        1e-2,
        hovers=True,
        l2=1e-4,
    ),
    # On these dense problems SparseAdam is Adam with eps added before the bias correction; a
    # gradient that reaches exactly 0 (at the float32 minimum) freezes its moments instead of
    # letting them decay, so Adam's bursts cannot start. Adam's rates; measured: 4e-6 from the
    # parabola's minimum, and a Rosenbrock loss of 0.
    Entry("sparse_adam", gx.sparse_adam, {}, 3e-3, 1e-3),
    Entry("nadam", gx.nadam, {}, 3e-3, 5e-4),
    # With coupled decay NAdam's bursts (see Adam's) come sooner: measured 1.9e-4 from the
    # minimum after 10000 steps at lr = 3e-3, but 4e-6 after the test's 6000.
    Entry("nadam_weight_decay", gx.nadam, {"weight_decay": 1e-4}, 3e-3, 5e-4, l2=1e-4),
    Entry(
        "nadam_decoupled",
        gx.nadam,
        {"weight_decay": 1e-2, "decoupled_weight_decay": True},
        1e-2,
        1e-3,
        hovers=True,
    ),
    # Lion's step is exactly lr per coordinate (a sign), so it always hovers. Its default
    # weight decay (1e-3, decoupled) is on.
    Entry("lion", gx.lion, {}, 1e-3, 3e-4, hovers=True),
    # RAdam is SGD with momentum on m_hat for its first steps (rho_t <= 5: t <= 5 for
    # b2 = 0.999), then Adam with a factor r_t <= 1: Adam's learning rates, measured 6.8e-6 from
    # the parabola's minimum and f = 2.9e-13 on Rosenbrock.
    Entry("radam", gx.radam, {}, 3e-3, 1e-3),
    # Adadelta's step is d = sqrt(E[d^2] + eps) / sqrt(E[g^2] + eps) * g, whose fixed point is
    # d = g: once the average of squared steps has caught up it is gradient descent at rate lr
    # (at least lr near a minimum, where E[g^2] << eps), so Rosenbrock needs lr < 2.0e-3 (see
    # above), and gets lr = 1e-3 as SGD does. Until then |d| grows like sqrt(t * eps), which
    # with torch's eps = 1e-6 is too slow to cross the valley in 2e4 steps (measured f = 3.5
    # at lr = 1e-3); larger rates get there but are unstable at the minimum (e.g. rho = 0.8,
    # eps = 1e-7, lr = 3e-2: f = 4.6e-5 at 1.5e4 steps, 2.6e-4 at 2.5e4). eps = 1e-3 starts
    # 30x faster: f = 4.0e-7 at 2e4 steps, 1.5e-9 at 4e4. On the parabola lr = 0.1 contracts
    # by 0.8 per step (measured 6.4e-7 from 1000 steps on); lr = 1 hovers (6.9e-3).
    Entry("adadelta", gx.adadelta, {"eps": 1e-3}, 0.1, 1e-3),
    # Rprop halves a coordinate's step at each sign flip, down to min_step_size = 1e-6, so it
    # ends within a few 1e-6 of the minimum (measured 1.4e-6 on the parabola; f = 2.4e-8 on
    # Rosenbrock) from torch's lr = 1e-2, which only sets the initial steps.
    Entry("rprop", gx.rprop, {}, 1e-2, 1e-2),
    # ASGD is SGD with a slowly decaying rate (eta = lr / (1 + lambd lr t)^0.75: 0.4% lower
    # after 6000 steps at lr = 0.1) and a decay lambd = 1e-4 of the params, which moves the
    # minimum as an L2 penalty of 1e-4 does (hence l2); SGD's rates, measured 6.2e-7 from the
    # minimum and f = 8.5e-8.
    Entry("asgd", gx.asgd, {}, 0.1, 1e-3, l2=1e-4),
    # Adafactor's step is relative to each param's RMS, floored at eps2 (torch's default 1e-3):
    # Rosenbrock's valley runs through the origin, where the RMS of (x, y) vanishes and steps
    # of lr * 1e-3 stall the iterate there (measured: f = 1.04, 1.00 and 0.72 after 20000
    # steps at lr = 3e-4, 5e-4 and 1e-3; still 0.064 after 30000 at 3e-4 with eps2 = 0.1).
    # eps2 = 1 floors the step at lr. Its update g / sqrt(v) is normalised, so near
    # Rosenbrock's minimum the step stays ~lr, which costs ~500 lr^2 (see above): lr = 5e-4
    # (measured f = 5.6e-5 from 15000 steps on). On the parabola the gradient does vanish:
    # lr = 3e-3 reaches 1.7e-7 (lr = 1e-2 hovers at 5.6e-3).
    Entry("adafactor", gx.adafactor, {"eps": (None, 1.0)}, 3e-3, 5e-4),
    # Muon takes matrices only (torch's rule), and the problems have vectors: the recipe gives
    # the parabola's matrix to Muon and its vector to AdamW, and Rosenbrock (a vector) to
    # AdamW alone, at adamw's rate. Muon's orthogonalised step keeps a size of ~lr whatever the
    # gradient's, so it hovers (measured on the parabola's matrix: 0.9 lr at lr = 3e-3 and
    # 1e-2; at 1e-3 it is still 0.42 away after the 6000 steps).
    Entry(
        "muon_with_adamw",
        gx.muon_with_adamw,
        {},
        3e-3,
        1e-3,
        hovers=True,
        covers=(gx.muon,),
    ),
    # GaLore (tests/test_galore.py): the parabola's (2, 3) matrix is projected at its full rank
    # 2 (rank 128 is capped), so each period is Adam in a rotated basis, and update_proj_gap=10
    # recomputes the basis 600 times; the vector and Rosenbrock get the same Adam unprojected.
    # galore_adamw's step is scale = 0.25 of Adam's: lr = 3e-2 reaches 1.1e-6 and f = 8.9e-14
    # (Rosenbrock at 1e-2); galore (Optax's, scale 1) at 3e-3: 6.8e-6 and f = 2.3e-7. At rank
    # 1 the matrix does not converge in 6000 steps (1.3 from the minimum at lr = 1e-2): the
    # moments are not rotated when the basis changes (as in the reference).
    Entry("galore_adamw", gx.galore_adamw, {"update_proj_gap": 10}, 3e-2, 1e-2),
    Entry("galore", gx.galore, {"update_proj_gap": 10}, 3e-3, 3e-3),
    # SOAP (tests/test_soap.py compares it with pytorch-optimizer's): Adam in the eigenbasis of
    # its factors. Its first step only gathers the factors, so on the parabola step 2's
    # gradient G equals step 1's, which the bases diagonalise: Q_L^T G Q_R is zero off its
    # diagonal up to rounding (3e-15 in float64, 8e-7 in float32), and Adam's ratio
    # x / (sqrt(0.05) |x| + eps) turns that rounding into steps of ~lr at the default
    # eps = 1e-8. Measured there: eager vs jit 6.8e-14 relative in float64, shard_map vs one
    # device past 1e-6, and pytorch-optimizer's own SOAP moves w by 3.2e-3 (float32) and
    # 1.5e-10 (float64) after 3 steps when the gradients move by one ulp. eps = 1e-2 damps the
    # rounding below an ulp of the params (the reference: 1.2e-7 and 2.2e-16; eager vs jit
    # 1.2e-16; shard_map 1.2e-7) and keeps both factors, the (3, 3) one rank-deficient after
    # step 1. Measured: parabola 2.2e-4 from the minimum at lr = 1e-3 and 1e-2 alike (the decay
    # after the step sets it; hovers); Rosenbrock (a vector: Adam's rule) f = 5.2e-8 at
    # lr = 1e-3 (1.8e-6 at 3e-3).
    Entry("soap", gx.soap, {"precondition_frequency": 2, "eps": 1e-2}, 3e-3, 1e-3, hovers=True),
    # Shampoo's roots of the accumulated factors make it a full-matrix AdaGrad per dimension:
    # its step shrinks like lr / sqrt(t), so it needs a larger rate than Adam's. The factors
    # start from matrix_eps * I and gain one rank-1 term per step, so in the first steps they
    # are near-singular: with the default 1e-6 their condition numbers after 3 steps are 2.9e7
    # (the vector's 3x3) and 2.7e8 (the matrix's 3x3), past float32's 1 / eps = 8.4e6, and the
    # float32 SVD returns the small singular values with no correct digit; their inverse roots
    # turn the 2e-7 relative difference between gradients averaged by an all-reduce and by the
    # mean loss into params 0.46 apart after 3 steps (test_shard_map_equals_single_device_...).
    # Measured, the worst leaf's |difference| / (1e-6 + 1e-6 |value|) of that test (1 fails)
    # is 15 at matrix_eps = 1e-2 and 2.0 at 0.1 (both in the roots), 0.67 at 0.3, and 0.31 at
    # 1, where the condition numbers are at most 2.4e2 and the worst leaf is a factor's sum of
    # products, element-wise arithmetic, not the roots. matrix_eps = 1 converges as well:
    # the parabola 7.7e-6 from its minimum at lr = 0.3 (1.2e-4 at 0.1), Rosenbrock f = 2.3e-10
    # at lr = 0.3 (4.1e-5 at 0.1); at 1e-6 they were 7.4e-6 and 2.3e-10.
    Entry("shampoo", gx.shampoo, {"matrix_eps": 1.0}, 0.3, 0.3),
    # The matrix optimizers with their state stacked by shape (tests/test_stacked_state.py
    # compares each with leaf by leaf): the same entries, through the table's properties.
    Entry(
        "soap_stacked",
        gx.soap,
        {"precondition_frequency": 2, "eps": 1e-2, "stack_by_shape": True},
        3e-3,
        1e-3,
        hovers=True,
    ),
    Entry("shampoo_stacked", gx.shampoo, {"matrix_eps": 1.0, "stack_by_shape": True}, 0.3, 0.3),
    Entry(
        "galore_adamw_stacked",
        gx.galore_adamw,
        {"update_proj_gap": 10, "stack_by_shape": True},
        3e-2,
        1e-2,
    ),
    Entry(
        "muon_with_adamw_stacked",
        gx.muon_with_adamw,
        {"stack_by_shape": True},
        3e-3,
        1e-3,
        hovers=True,
        covers=(gx.muon,),
    ),
    # Optax's catalogue (tests/test_optax_catalogue.py compares each with Optax). Adam's
    # relatives take Adam's rates (measured: AdaBelief 2.1e-7 from the parabola's minimum and
    # f = 8.9e-12; Adan 0 and 0; the optimistic Adams 4.0e-6 and f = 4.1e-5). Yogi's second
    # moment starts at 1e-6 and grows additively, by (1 - b2) g^2 per step, so its first steps
    # are large and then slow: at lr = 1e-3 Rosenbrock is still at f = 1.7 after 20000 steps,
    # at 3e-3 at 0.018; lr = 1e-2 gives 9.4e-6 and f = 1.9e-9.
    Entry("adabelief", gx.adabelief, {}, 3e-3, 1e-3),
    Entry("adan", gx.adan, {}, 3e-3, 1e-3),
    Entry("yogi", gx.yogi, {}, 1e-2, 1e-2),
    Entry("optimistic_adam", gx.optimistic_adam, {}, 3e-3, 1e-3),
    Entry("optimistic_adam_v2", gx.optimistic_adam_v2, {}, 3e-3, 1e-3),
    # The optimistic step 2 g_t - g_{t-1} is gradient descent with a look-back: on the parabola
    # lr = 0.1 reaches 6.4e-7; on Rosenbrock it is stable for a smaller lr than SGD (f = 0.30 at
    # 1e-3, NaN at 1.5e-3), and lr = 6e-4 gives f = 1.2e-5.
    Entry("optimistic_gradient_descent", gx.optimistic_gradient_descent, {}, 0.1, 6e-4),
    # Polyak's step (f - 0) / |g|^2 is exact on the parabola (1/4 of the way per coordinate,
    # the minimum in one step per direction), capped at max_learning_rate = 1 (the entry's
    # "learning rate"): measured 2.7e-7 and f = 2.5e-11. Its update needs the loss.
    Entry("polyak_sgd", gx.polyak_sgd, {}, 1.0, 1.0, update_args=("value",)),
    # SM3's accumulators sum g^2 (b2 = 1), an Adagrad per axis: Adagrad's lr = 1 (measured
    # 6.1e-7 and f = 5.0e-11; at 0.1 f = 9.9e-4 after 20000 steps).
    Entry("sm3", gx.sm3, {}, 1.0, 1.0),
    # Annealed noise of variance 0.01 / t^0.55 (std 9e-3 at t = 6000) keeps SGD within ~lr std
    # of the minimum: measured 5.7e-3 on the parabola; on Rosenbrock f = 6.4e-8 at SGD's rate.
    Entry("noisy_sgd", gx.noisy_sgd, {}, 0.1, 1e-3, hovers=True),
    # Sign methods step exactly lr per coordinate, as Lion (measured 1.7e-3 and 2.1e-3 from the
    # parabola's minimum at lr = 1e-3). On Rosenbrock signum converges at Lion's 3e-4 (f =
    # 7.5e-6), but signSGD's unsmoothed signs zig-zag across the valley (f = 0.017 at 3e-4,
    # 0.039 at 5e-4): a rate decaying from 1e-3 to 1e-5 over the run gives f = 3.0e-5.
    Entry("sign_sgd", gx.sign_sgd, {}, 1e-3, gx.exponential_decay(1e-3, 20000, 0.01), hovers=True),
    Entry("signum", gx.signum, {}, 1e-3, 3e-4, hovers=True),
    # NovoGrad normalises each leaf's gradient by its norm and adds momentum (b1 = 0.9): a step
    # of ~10 lr that does not shrink near the minimum (measured 7.4e-4 at lr = 1e-3, 8.0e-3 at
    # 1e-2); on Rosenbrock that costs ~500 (10 lr)^2: f = 1.6e-4 at 1e-3, 1.5e-5 at 3e-4.
    Entry("novograd", gx.novograd, {}, 1e-3, 3e-4, hovers=True),
    # The trust-ratio methods step by lr * ||p|| per leaf, whatever the gradient's size, so they
    # hover (measured on the parabola: LAMB 2.0e-3 at lr = 3e-3, LARS 8.0e-4 at lr = 1 with
    # its trust coefficient 1e-3, Fromage 1.5e-3 at lr = 1e-3). Rosenbrock's valley runs
    # through the origin, where ||p|| (one leaf, (x, y)) vanishes and so does the step: the
    # iterate must shrink towards it and grow away again by factors of at most (1 +- lr) per
    # step, which fails for small rates (LAMB f = 0.99 at 1e-3, LARS 1.01 at 0.03, Fromage 1.01
    # at 3e-4), while near (1, 1) the step of ~1.4 lr costs ~500 (1.4 lr)^2. LARS's momentum
    # (0.9) gives the room: lr = 0.1 reaches f = 4.6e-7. Fromage's min_norm = 1 floors ||p|| at
    # 1 near the origin: f = 2.7e-5 at lr = 5e-4. LAMB has no floor: its rate decays from 1e-2
    # (to cross the origin) to 1e-4 (to settle), f = 2.9e-6 (3e-3 constant: 0.026; 1e-2: 0.016).
    Entry("lamb", gx.lamb, {}, 3e-3, gx.exponential_decay(1e-2, 20000, 0.01), hovers=True),
    Entry("lars", gx.lars, {}, 1.0, 0.1, hovers=True),
    Entry("fromage", gx.fromage, {"min_norm": 1.0}, 1e-3, 5e-4, hovers=True),
    # Optax's NAdamW: Adam's rule with a Nesterov numerator and decoupled decay 1e-4. Adam's
    # rates: within CONVERGED_DISTANCE of the parabola's minimum without hovering (measured).
    Entry("nadamw", gx.nadamw, {}, 3e-3, 1e-3),
    # Optax's AdamaxW, Adamax with decoupled decay 1e-4: Adamax's rates; like
    # adamax_weight_decay its decay keeps the iterate moving at the float32 floor (measured
    # 1.1e-4 from the parabola's minimum at lr = 0.1, above CONVERGED_DISTANCE), so it hovers.
    Entry("adamaxw", gx.adamaxw, {}, 0.1, 1e-2, hovers=True),
    Entry("composed_chain", composed_chain, {}, 3e-3, 3e-3),
    # L-BFGS takes torch's lr = 1: the step length of its quasi-Newton direction, which on the
    # parabola (Hessian 2I) is exact from the second iteration on (H_diag = y.s / y.y = 1/2).
    Entry("lbfgs", gx.lbfgs, {}, 1.0, 1.0, update_args=UPDATE_ARGS),
    Entry(
        "lbfgs_strong_wolfe",
        gx.lbfgs,
        {"line_search_fn": "strong_wolfe", "history_size": 5},
        1.0,
        1.0,
        update_args=UPDATE_ARGS,
    ),
    # optax.contrib's optimizers, with Optax's numbers (tests/test_optax_contrib.py). Measured
    # (distance from the parabola's minimum after 6000 steps; Rosenbrock's loss after 20000,
    # bar 2.4e-4) at the rates given.
    # DoG and DoWG set their own step (lr is a factor of it). DoG's default first step,
    # 1e-6 (1 + ||x_0||) along g / ||g||, is below float32's spacing for the parabola's small
    # coordinates (test_apply_updates_keeps_param_dtype checks that the first step moves them);
    # the authors' other suggestion, 1e-4, moves them: 9.6e-7 and 1.5e-4 at lr = 1 (the default
    # reaches 1.3e-6 and 5.3e-10). DoWG at lr = 1 overshoots Rosenbrock's valley (7.5e-4) and
    # at 0.5 reaches 0 and 9.3e-10.
    Entry("dog", gx.dog, {"init_step": ("heuristic", 1e-4)}, 1.0, 1.0),
    Entry("dowg", gx.dowg, {}, 0.5, 0.5),
    # Schedule-free: the table sees the train-mode params y = b1 x + (1 - b1) z, where x is the
    # average of all the iterates z (equal weights at a constant lr), so the first steps' path
    # weighs on it as 1 / steps: it needs a larger lr than its base method to arrive early
    # enough. SGD on Rosenbrock (f at 2e4 steps, bar 2.4e-4): lr 1e-3 1.4e-3, 2e-3 7.8e-4,
    # 3e-3 3.5e-5, 5e-3 9.6e-8, 6e-3 7.3e-7, 8e-3 diverges (z's step is taken at y, not z);
    # parabola at lr 0.1: 5.2e-7 from the minimum. AdamW's y keeps a fraction of z's ~lr
    # steps across the valley: Rosenbrock 2.2e-4 at lr 1e-2 (at the bar), 2.0e-5 at 3e-3.
    Entry("schedule_free_sgd", gx.schedule_free_sgd, {}, 0.1, 5e-3),
    Entry("schedule_free_adamw", gx.schedule_free_adamw, {}, 0.1, 3e-3),
    # COCOB's lr scales the gradients, which its bets are invariant to (Rosenbrock 6.8e-4 at lr
    # 0.1, 1 and 10 with alpha = 100). alpha bounds the first bets relative to the largest
    # gradient seen; alpha = 10 lets them grow sooner: 2.9e-7 and 1.1e-4.
    Entry("cocob", gx.cocob, {"alpha": 10.0}, 1.0, 1.0),
    # AdEMAMix's slow moment (b3 = 0.9999 by default) keeps an alpha-weighted memory of ~1e4
    # steps, which overshoots the parabola's minimum for longer than the test's 6000 steps
    # (measured 0.07 at lr = 3e-3); b3 = 0.99 shortens it to ~100: 1.7e-7 and 0.
    Entry("ademamix", gx.ademamix, {"b3": 0.99}, 3e-3, 3e-3),
    # Simplified AdEMAMix sums gradients (m = b1 m + g, b1 = 0.99): its step is ~lr / (1 - b1)
    # = 100 lr and does not shrink near a minimum (m / sqrt(n) tends to a sign), so it hovers:
    # 2.7e-4 and 7.3e-6 at lr = 1e-4 (0.00213 and 8.3e-4 at 1e-3).
    Entry("simplified_ademamix", gx.simplified_ademamix, {}, 1e-4, 1e-4, hovers=True),
    # ADOPT clips its normalised gradient to (t - 1)^(1/4) and normalises by the previous,
    # slow (b2 = 0.9999) second moment, so its first steps are short: Rosenbrock needs lr = 0.1
    # (3.3, 1.3, 0.055, 2.6e-4 at 1e-3, 3e-3, 1e-2, 3e-2); 1.5e-6 and 1.6e-10.
    Entry("adopt", gx.adopt, {}, 0.1, 0.1),
    Entry("acprop", gx.acprop, {}, 1e-3, 1e-3),  # 1.1e-6 and 1.5e-8
    # MADGRAD's lr enters its dual averaging: 3.6e-7 and 3.2e-14 at lr = 1e-2.
    Entry("madgrad", gx.madgrad, {}, 1e-2, 1e-2),
    # MoMo's Polyak step (capped at lr) uses the loss, whose minimum is 0 = the default
    # lower bound on both problems: both land on the minimum exactly at lr = 1 (MoMo) and
    # within 8.9e-7 and 4.1e-13 at lr = 1e-2 (MoMo-Adam).
    Entry("momo", gx.momo, {}, 1.0, 1.0, update_args=("value",)),
    Entry("momo_adam", gx.momo_adam, {}, 1e-2, 1e-2, update_args=("value",)),
    # Sophia (the authors' SophiaG, with its decoupled decay 0.1), given the estimate g * g at
    # every step (K = 1). Its Hessian average then lags g^2, so |m| / (rho H) exceeds 1 near a
    # minimum and the step is lr sign(m), as Lion's: it hovers (measured 5.1e-3 from the
    # parabola's minimum at lr = 1e-3, 1.3e-2 at 3e-3) and takes Lion's Rosenbrock rate:
    # f = 8.9e-6 at lr = 3.3e-4 (4.9e-4 at 1e-3).
    Entry(
        "sophia",
        gx.sophia,
        {"hessian_update_interval": 1},
        1e-3,
        3e-4,
        hovers=True,
        update_args=("hessian",),
    ),
    # The authors' learning-rate-free Adams (tests/test_learning_rate_free.py). lr multiplies
    # the estimated step d lr: at lr = 1 (their default) d overshoots these small problems
    # (measured: Prodigy 3.6e-3 from the parabola's minimum and Rosenbrock f = 2.6; D-Adaptation
    # 0.084 and 3.4e-4). Prodigy: 1.2e-7 at lr = 0.1 and f = 1.4e-5 at 0.05 (1.8e-4 at 0.1,
    # 4.6e-3 at 0.03); D-Adaptation: 9.3e-6 at 0.3 (1.7e-4 at 0.1) and f = 3.6e-15 at 0.03.
    Entry("prodigy", gx.prodigy, {}, 0.1, 0.05),
    Entry("dadapt_adamw", gx.dadapt_adamw, {}, 0.3, 0.03),
)

ENTRIES: dict[str, Entry] = {entry.id: entry for entry in OPTIMIZERS}
assert len(ENTRIES) == len(OPTIMIZERS), "two entries share an id"

# The public optimizers that the table's entries use, by name.
FACTORIES: dict[str, Callable[..., gx.GradientTransformation]] = {
    entry.name: entry.factory for entry in OPTIMIZERS if is_optimizer(entry.factory)
}
# The names among them whose update needs the loss (see ``Entry.update_args``).
NEEDS_LOSS_BY_NAME: set[str] = {
    entry.name for entry in OPTIMIZERS if is_optimizer(entry.factory) and needs_the_loss(entry)
}

# Public optimizers covered by an entry whose factory runs them on some leaves, by name. They do
# not take the table's problems themselves (Muon refuses vectors), so no per-optimizer data is
# kept for them here; their own tests run them on their leaves (tests/test_muon.py).
COVERED: dict[str, Callable[..., gx.GradientTransformation]] = {
    f.__name__: f for entry in OPTIMIZERS for f in entry.covers
}

# ``@table`` runs a test once per entry, with the entry as the argument ``entry``.
table = pytest.mark.parametrize("entry", [pytest.param(e, id=e.id) for e in OPTIMIZERS])

# One entry of each kind of state and arithmetic, for the properties where the table's every
# entry would test the same machinery again (``jax.pmap`` is ``jit`` of ``shard_map`` since JAX
# 0.8, jax/_src/pmap.py, and every entry runs under ``shard_map``; MultiSteps' counting does not
# depend on the inner optimizer, whose equality on a whole round every entry still checks):
# momentum with Nesterov, coupled decay, Adam's bias corrections and AMSGrad's max, a mask,
# factored moments, a matrix-only optimizer in a group, norms per leaf (LAMB), a ratio of norms
# over all leaves (DoG), accumulators per axis (SM3), PRNG keys in the state (noisy SGD), the
# loss in the update (MoMo), and the composed chain's global-norm clip.
REPRESENTATIVE_IDS = (
    "sgd_nesterov",
    "adagrad_weight_decay",
    "adam_amsgrad",
    "adamw_masked",
    "adafactor",
    "muon_with_adamw",
    "shampoo_stacked",
    "lamb",
    "dog",
    "sm3",
    "noisy_sgd",
    "momo",
    "composed_chain",
)
representatives = pytest.mark.parametrize(
    "entry", [pytest.param(e, id=e.id) for e in OPTIMIZERS if e.id in REPRESENTATIVE_IDS]
)

# Every optimizer once (its default entry, ``id`` = its name) plus the representatives: for the
# properties of a program's structure (vmap, shard_map, jit, None leaves, dtypes of applied
# updates), which an option of the same optimizer (a weight decay, dampening, a centred moment)
# does not change; the options' numbers are compared with torch/Optax in their own tests, and
# convergence, state dtypes, recompilation, injection and the update checks run every entry.
every_optimizer = pytest.mark.parametrize(
    "entry",
    [pytest.param(e, id=e.id) for e in OPTIMIZERS if e.id == e.name or e.id in REPRESENTATIVE_IDS],
)


def assert_covers_every_optimizer(names: Iterable[str], what: str) -> None:
    """Asserts that ``names`` (the keys of per-optimizer data) are exactly ``FACTORIES``' names."""
    names = set(names)
    missing, unknown = sorted(set(FACTORIES) - names), sorted(names - set(FACTORIES))
    assert not missing and not unknown, (
        f"{what}: no entry for the table's optimizers {missing}; "
        f"entries for names the table does not have {unknown}"
    )
