"""Muon's building blocks: the Newton-Schulz orthogonalisation of a matrix, the momentum it is
applied to (:func:`scale_by_muon`), torch's learning-rate adjustment by shape, and the default
split of a model's leaves between Muon and AdamW (:func:`muon_labels`).

Muon works on matrices only: every leaf it sees must be 2-D.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _checks, _tree, _validate
from gradxform._base import EmptyState, GradientTransformation, expect_state
from gradxform._stacking import LeafLayout, columns
from gradxform._tree import path_name
from gradxform._types import StepCount

# Keller Jordan's quintic coefficients, torch's and Optax's default.
NS_COEFFICIENTS = (3.4445, -4.775, 2.0315)
# torch refuses 100 or more Newton-Schulz steps.
MAX_NS_STEPS = 99
ADJUST_LR_FNS = (None, "original", "match_rms_adamw")


class ScaleByMuonState(NamedTuple):
    """``count`` (int32) and the momentum ``mu``, one matrix per param.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> state = gx.scale_by_muon().init({"w": jnp.zeros((2, 3))})
      >>> state.count, state.mu["w"].shape
      (Array(0, dtype=int32), (2, 3))
    """

    count: StepCount
    mu: Any


def check_newton_schulz(
    who: str, coefficients_name: str, coefficients: Any, ns_steps: Any, eps: Any, ns_dtype: Any
) -> None:
    """The arguments of the iteration: three finite coefficients, a step count in [0, 99]
    (an injected one may be a scalar array), ``eps >= 0`` and a floating dtype or ``None``."""
    if not isinstance(coefficients, Sequence) or isinstance(coefficients, str):
        raise TypeError(
            f"{who}: `{coefficients_name}` must be a tuple of three numbers (a, b, c), got "
            f"{coefficients!r}"
        )
    if len(coefficients) != 3:
        raise ValueError(
            f"{who}: `{coefficients_name}` must hold three numbers (a, b, c), got "
            f"{len(coefficients)}: {coefficients!r}"
        )
    for c in coefficients:
        try:
            _validate.finite(who, coefficients_name, c)
        except (TypeError, ValueError) as error:
            raise type(error)(f"{error}, in {coefficients!r}") from None
    _validate.count(who, "ns_steps", ns_steps, minimum=0, maximum=MAX_NS_STEPS, traced_ok=True)
    _validate.non_negative(who, "eps", eps)
    _validate.dtype(who, "ns_dtype", ns_dtype)


def _product(p: jax.Array, q: jax.Array, accumulate: Any, sharding: Any = None) -> jax.Array:
    """``p @ q`` of two matrices of the iteration's dtype, summed in ``accumulate``."""
    return jnp.matmul(
        p,
        q,
        preferred_element_type=accumulate,
        precision=jax.lax.Precision.HIGHEST,
        out_sharding=sharding,
    )


def _explicit_shardings(x: jax.Array) -> tuple[Any, Any]:
    """The output shardings of ``x x^T`` (whole on every device) and of ``B x`` (as ``x``)
    when ``x`` is sharded over explicit mesh axes, where a product summed over a sharded axis
    must name them; ``(None, None)`` otherwise (automatic sharding propagates)."""
    spec = jax.typeof(x).sharding.spec
    if all(axis is None for axis in spec):
        return None, None
    return jax.sharding.PartitionSpec(), spec


def newton_schulz(
    x: jax.Array,
    coefficients: Sequence[Any] = NS_COEFFICIENTS,
    steps: Any = 5,
    eps: Any = 1e-7,
    *,
    dtype: Any | None = None,
    clamp_norm: bool = True,
) -> jax.Array:
    """Newton-Schulz orthogonalisation of a matrix: ``U S V^T -> ~ U V^T``.

    With ``(a, b, c) = coefficients``, transposing first when ``x`` has more rows than
    columns (and back at the end)::

        X_0 = x / max(|x|_F, eps)      (clamp_norm, torch)   or   x / (|x|_F + eps)   (Optax)
        A_k = X_k X_k^T
        X_{k+1} = a X_k + (b A_k + c A_k A_k) X_k               for k < steps

    The iterates are kept in ``dtype`` (by default ``x``'s compute dtype, >= float32). Each
    product is summed in at least float32 and rounded to ``dtype`` once, together with the
    term it is added to, as torch's ``addmm`` does: ``dtype=bfloat16`` reproduces torch's
    ``Muon`` on CPU, whose iteration is hard-wired to bfloat16. The norm is taken of ``x``
    rounded to ``dtype`` and itself rounded to ``dtype``, as torch computes it. A zero matrix
    gives zeros, also with ``eps = 0``. The loop is a ``lax.fori_loop``: its size does not grow
    with ``steps``, and an array ``steps`` (an injected hyperparameter) runs as a while loop.

    Args:
      x: a matrix.
      coefficients: ``(a, b, c)``.
      steps: how many iterations (>= 0).
      eps: the floor (or, without ``clamp_norm``, the addend) of the norm.
      dtype: the dtype of the iterates.
      clamp_norm: divide by ``max(|x|_F, eps)`` as torch does, else by ``|x|_F + eps``.

    Returns:
      The orthogonalised matrix, of ``x``'s shape, in ``dtype``.

    References:
      Jordan et al., `Muon: An optimizer for hidden layers in neural networks
      <https://kellerjordan.github.io/posts/muon/>`_, 2024.
    """
    if x.ndim != 2:
        raise ValueError(f"newton_schulz: expected a matrix, got shape {x.shape}")
    dtype = jnp.dtype(_tree.compute_dtype(x.dtype) if dtype is None else dtype)
    accumulate = _tree.compute_dtype(dtype)
    a, b, c = (_tree.cast_scalar(k, accumulate) for k in coefficients)
    transpose = x.shape[0] > x.shape[1]
    x = (x.T if transpose else x).astype(dtype)

    widened = x.astype(accumulate)
    norm = jnp.sqrt(jnp.sum(widened * widened)).astype(dtype).astype(accumulate)
    floor = _tree.cast_scalar(eps, accumulate)
    if clamp_norm:
        denominator = jnp.maximum(norm, jnp.asarray(floor, dtype).astype(accumulate))
    else:
        denominator = norm + floor
    # Zero only for a zero matrix (and eps = 0), where the numerator is zero too.
    x = _tree.safe_divide(widened, denominator, not _validate.is_static_nonzero(eps)).astype(dtype)

    whole, like_x = _explicit_shardings(x)

    def step(_, x):
        gram = _product(x, x.T, accumulate, whole).astype(dtype)
        gram_update = b * gram.astype(accumulate) + c * _product(gram, gram, accumulate)
        product = _product(gram_update.astype(dtype), x, accumulate, like_x)
        return (a * x.astype(accumulate) + product).astype(dtype)

    if not isinstance(steps, int):
        steps = jnp.asarray(steps).astype(jnp.int32)
    x = jax.lax.fori_loop(0, steps, step, x)
    return x.T if transpose else x


def check_matrices(who: str, params: Any) -> None:
    """Raises ``ValueError`` naming the first leaf that is not a matrix, ``TypeError`` for a
    complex one (torch's Muon refuses both)."""
    _tree.check_inexact_leaves(params, who)
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if jnp.ndim(leaf) != 2:
            raise ValueError(
                f"{who}: Muon orthogonalises matrices, but the parameter at {path_name(path)} "
                f"has shape {jnp.shape(leaf)}. Give the other leaves another optimizer: "
                "`gradxform.muon_with_adamw` sends them to AdamW (or use "
                "`gradxform.multi_transform`)."
            )
        if jnp.iscomplexobj(leaf):
            raise TypeError(
                f"{who}: the parameter at {path_name(path)} is complex ({jnp.result_type(leaf)}); "
                "Muon orthogonalises real matrices."
            )


def muon_direction(
    who: str,
    ns_coefficients: Sequence[Any],
    ns_steps: Any,
    beta: Any,
    eps: Any,
    mu_dtype: Any,
    *,
    nesterov: bool,
    ns_dtype: Any,
    torch_arithmetic: bool,
    stack_by_shape: bool,
) -> GradientTransformation:
    """:func:`scale_by_muon` with errors naming ``who`` (the optimizer users call)."""

    def init_fn(params):
        check_matrices(who, params)
        leaves = LeafLayout(params, stacked=stack_by_shape)
        zeros = leaves.map(lambda p: _tree.tree_zeros_like(p, mu_dtype), leaves.units(params))
        return ScaleByMuonState(count=jnp.zeros([], jnp.int32), mu=leaves.state(zeros))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        expect_state(who, state, ScaleByMuonState)
        leaves = LeafLayout(updates, stacked=stack_by_shape)
        momenta = leaves.checked_units(who, state.mu, "momentum", updates)
        count = _tree.safe_increment(state.count)
        if not torch_arithmetic:
            correction = _tree.bias_correction(beta, count)
            next_correction = _tree.bias_correction(beta, _tree.safe_increment(count))

        def leaf(g, m):
            dtype, out_dtype = _tree.compute_dtype(g.dtype, m.dtype), _tree.update_dtype(g, m)
            g, m_old = g.astype(dtype), m.astype(dtype)
            if torch_arithmetic:
                weight = 1 - beta if _validate.is_static_number(beta) else 1 - jnp.asarray(beta)
                new_m = _tree.torch_lerp(m_old, g, _tree.cast_scalar(weight, dtype))
                u = (
                    _tree.torch_lerp(g, new_m, _tree.cast_scalar(beta, dtype))
                    if nesterov
                    else new_m
                )
            else:
                new_m = _tree.moment_update(m_old, g, beta, dtype)
                u = new_m / _tree.cast_scalar(correction, dtype)
                if nesterov:
                    b = _tree.cast_scalar(beta, dtype)
                    u = b * (new_m / _tree.cast_scalar(next_correction, dtype)) + (1 - b) * (
                        g / _tree.cast_scalar(correction, dtype)
                    )
            o = newton_schulz(
                u, ns_coefficients, ns_steps, eps, dtype=ns_dtype, clamp_norm=torch_arithmetic
            )
            return o.astype(out_dtype), new_m.astype(m.dtype)

        # Stacked, same-shape matrices share one batched iteration (compile time O(shapes)).
        u, mu = columns(leaves.map(leaf, leaves.units(updates), momenta), 2)
        return leaves.tree(u), ScaleByMuonState(count=count, mu=leaves.state(mu))

    return GradientTransformation(init_fn, update_fn)


def scale_by_muon(
    ns_coeffs: Sequence[float] = NS_COEFFICIENTS,
    ns_steps: int = 5,
    beta: float = 0.95,
    eps: float = 1e-8,
    mu_dtype: Any | None = None,
    *,
    nesterov: bool = True,
    ns_dtype: Any | None = None,
    torch_arithmetic: bool = False,
    stack_by_shape: bool = False,
) -> GradientTransformation:
    """Muon's direction (Jordan et al., 2024): momentum orthogonalised by Newton-Schulz.

    By default Optax's ``optax.contrib.scale_by_muon`` (Frobenius preconditioning, not
    adaptive), with ``c_t = 1 - beta^t``::

        m_t = beta m_{t-1} + (1 - beta) g_t
        v_t = beta m_t / c_{t+1} + (1 - beta) g_t / c_t     if nesterov   else   m_t / c_t
        u_t = NS(v_t)                           (X_0 = v_t / (|v_t|_F + eps), see newton_schulz)

    With ``torch_arithmetic`` it is the direction of ``torch.optim.Muon``: no bias correction,
    torch's ``lerp`` for the momentum, and the norm floored at ``eps`` rather than added to::

        m_t = m_{t-1} + (1 - beta) (g_t - m_{t-1})
        v_t = g_t + beta (m_t - g_t)                        if nesterov   else   m_t
        u_t = NS(v_t)                           (X_0 = v_t / max(|v_t|_F, eps))

    Every param must be a matrix. See :func:`gradxform.muon` for torch's whole optimizer.

    Args:
      ns_coeffs: the coefficients ``(a, b, c)`` of the quintic iteration.
      ns_steps: Newton-Schulz iterations, in [0, 99].
      beta: the momentum's decay, in [0, 1).
      eps: the norm's addend (floor with ``torch_arithmetic``), >= 0.
      mu_dtype: dtype of the momentum; by default each param's dtype.
      nesterov: orthogonalise Nesterov's look-ahead ``v_t`` rather than the momentum.
      ns_dtype: dtype of the iteration (see :func:`newton_schulz`); by default the compute
        dtype, ``bfloat16`` for torch's numbers.
      torch_arithmetic: torch's momentum and normalisation, as above.
      stack_by_shape: keep the momentum as one stack per shape and dtype (``mu`` a tuple of
        stacks) and run each shape's iteration once under ``vmap``: the same numbers, compile
        time set by the distinct shapes (``gradxform._stacking.LeafLayout``).

    Returns:
      A transformation whose state is :class:`ScaleByMuonState`.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt = gx.scale_by_muon()
      >>> g = {"w": jnp.array([[3.0, 0.0], [0.0, 0.5]])}
      >>> u, _ = opt.update(g, opt.init(g))
      >>> [round(float(s), 2) for s in jnp.linalg.svd(u["w"], compute_uv=False)]
      [1.04, 0.71]

      Singular values 3 and 0.5 both end near 1 (in about [0.7, 1.2], the quintic's range).
    """
    who = "scale_by_muon"
    check_newton_schulz(who, "ns_coeffs", ns_coeffs, ns_steps, eps, ns_dtype)
    _validate.probability(who, "beta", beta)
    _validate.dtype(who, "mu_dtype", mu_dtype)
    _validate.boolean(who, "nesterov", nesterov)
    _validate.boolean(who, "torch_arithmetic", torch_arithmetic)
    _validate.boolean(who, "stack_by_shape", stack_by_shape)
    return muon_direction(
        who,
        ns_coeffs,
        ns_steps,
        beta,
        eps,
        mu_dtype,
        nesterov=nesterov,
        ns_dtype=ns_dtype,
        torch_arithmetic=torch_arithmetic,
        stack_by_shape=stack_by_shape,
    )


def lr_adjustment(adjust_lr_fn: str | None, shape: tuple[int, ...]) -> float:
    """torch's factor on the learning rate of a ``(rows, cols)`` matrix: ``max(1, rows /
    cols) ** 0.5`` (``None``, ``"original"``) or ``0.2 max(rows, cols) ** 0.5``
    (``"match_rms_adamw"``). An empty matrix gets 1 (it has nothing to update)."""
    rows, cols = shape
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    return math.sqrt(max(1, rows / cols)) if cols else 1.0


def adjust_by_shape(who: str, adjust_lr_fn: str | None) -> GradientTransformation:
    """``u <- lr_adjustment(shape) * u`` for every matrix (torch's ``adjust_lr_fn``)."""
    _validate.choice(who, "adjust_lr_fn", adjust_lr_fn, ADJUST_LR_FNS)

    def init_fn(params):
        del params
        return EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        _checks.check_against_params(who, updates, params)

        def leaf(u):
            dtype = _tree.compute_dtype(u.dtype)
            return lr_adjustment(adjust_lr_fn, u.shape) * u.astype(dtype)

        return jax.tree.map(leaf, updates), state

    return GradientTransformation(init_fn, update_fn)


_WORD = re.compile(r"[a-z]+")


def _is_embedding_or_head(key: str) -> bool:
    key = key.lower()
    return "embed" in key or bool({"head", "wte", "wpe"} & set(_WORD.findall(key)))


def _key_names(path: tuple) -> list[str]:
    names = []
    for key in path:
        if isinstance(key, jax.tree_util.DictKey):
            names.append(str(key.key))
        elif isinstance(key, jax.tree_util.GetAttrKey):
            names.append(key.name)
    return names


def muon_labels(params: Any) -> Any:
    """The usual split of a model between Muon and AdamW: ``"muon"`` or ``"adamw"`` per leaf.

    A leaf is ``"muon"`` when it is a matrix (2-D) and no key on its path names an embedding
    or a head; every other leaf (vectors, scalars, kernels of other ranks, embeddings, heads)
    is ``"adamw"``. A key names an embedding when it contains ``embed`` (``embedding``,
    ``embed_tokens``, ``Embed_0``, ``unembed``), and a head when ``head``, ``wte`` or ``wpe``
    is one of its words (runs of letters: ``lm_head``, ``head_0``; not ``MultiHeadAttention``
    or ``heads``). Keys are dict keys and attribute names, compared in lower case.

    Args:
      params: the parameter tree.

    Returns:
      A tree of ``"muon"``/``"adamw"`` labels with the params' structure.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> params = {"embed": jnp.ones((10, 4)), "layer": {"w": jnp.ones((4, 4)),
      ...           "b": jnp.ones(4)}, "lm_head": jnp.ones((4, 10))}
      >>> gx.muon_labels(params)
      {'embed': 'adamw', 'layer': {'b': 'adamw', 'w': 'muon'}, 'lm_head': 'adamw'}
    """

    def label(path, leaf):
        named = any(_is_embedding_or_head(k) for k in _key_names(path))
        return "muon" if jnp.ndim(leaf) == 2 and not named else "adamw"

    return jax.tree_util.tree_map_with_path(label, params)
