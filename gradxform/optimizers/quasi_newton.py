"""L-BFGS, as ``torch.optim.LBFGS``: one ``update`` is one ``step(closure)``."""

from __future__ import annotations

from gradxform._base import GradientTransformation
from gradxform._types import ScalarOrSchedule
from gradxform.optimizers._links import torch_optimizer
from gradxform.transforms.torch_lbfgs import check_torch_lbfgs, scale_by_torch_lbfgs


def lbfgs(
    learning_rate: ScalarOrSchedule = 1.0,
    *,
    max_iter: int = 20,
    max_eval: int | None = None,
    tolerance_grad: float = 1e-7,
    tolerance_change: float = 1e-9,
    history_size: int = 100,
    line_search_fn: str | None = None,
) -> GradientTransformation:
    """L-BFGS (Liu & Nocedal, 1989), as ``torch.optim.LBFGS``: one ``update`` is one ``step``.

    torch's ``step(closure)`` evaluates the loss as often as it needs; here the caller passes
    the loss at the params and a function that evaluates it anywhere::

        value, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = opt.update(grads, state, params, value=value,
                                    value_and_grad_fn=jax.value_and_grad(loss_fn))
        params = gradxform.apply_updates(params, updates)   # torch's params after step()

    Within the step, from ``x = params`` and ``g = grads``, each of at most ``max_iter``
    iterations (see :func:`gradxform.transforms.torch_lbfgs.scale_by_torch_lbfgs`)::

        y = g - g_prev, s = t d_prev;  keep (y, s) if y.s > 1e-10;  H_diag = y.s / y.y
        d = -H g        (two-loop recursion over the last history_size pairs)
        t = min(1, 1 / |g|_1) lr at the very first iteration, else lr
        x <- x + t d    (t from the strong-Wolfe search with line_search_fn="strong_wolfe")

    and the step stops at ``max_eval`` evaluations (default ``max_iter * 5 // 4``), or when
    ``max |g| <= tolerance_grad``, ``g.d > -tolerance_change``, ``max |t d| <=
    tolerance_change`` or ``|f - f_prev| < tolerance_change``. Given the same loss, the params,
    ``func_evals`` and ``n_iter`` (in :class:`LbfgsState`) are torch's after every step. The
    whole step is one compiled program (``lax.while_loop``), and the history a ring buffer of
    ``history_size`` pairs of flat vectors of all ``n`` params: the state holds
    ``2 (history_size + 1) n + history_size`` numbers and a few scalars.
    Complex params are pairs of reals, as in torch; ``value_and_grad_fn`` then returns torch's
    gradient convention, the conjugate of ``jax.grad``'s.

    Optax's ``optax.lbfgs`` (one preconditioned step per update with a zoom line search) is::

        chain(scale_by_lbfgs(memory_size=10), scale(-1.0),
              scale_by_zoom_linesearch(max_linesearch_steps=20, initial_guess_strategy="one"))

    Args:
      learning_rate: torch's ``lr``, the step length (or the line search's first trial).
      max_iter: the most iterations per step.
      max_eval: the most loss evaluations per step (default ``max_iter * 5 // 4``).
      tolerance_grad: stop when ``max |g|`` is at most this.
      tolerance_change: stop when the loss or the params change less than this.
      history_size: how many curvature pairs to keep.
      line_search_fn: ``None`` (fixed steps) or ``"strong_wolfe"``.

    Returns:
      ``chain(scale_by_torch_lbfgs)``, whose state holds an :class:`LbfgsState`.

    Example:
      >>> import jax, jax.numpy as jnp, gradxform as gx
      >>> def loss(p):
      ...     return jnp.sum((p["w"] - jnp.arange(3.0)) ** 2)
      >>> opt, params = gx.lbfgs(line_search_fn="strong_wolfe"), {"w": jnp.zeros(3)}
      >>> state, f = opt.init(params), jax.value_and_grad(loss)
      >>> value, grads = f(params)
      >>> updates, state = opt.update(grads, state, params, value=value, value_and_grad_fn=f)
      >>> [round(float(w), 5) for w in gx.apply_updates(params, updates)["w"]]
      [0.0, 1.0, 2.0]
    """
    who = "lbfgs"
    check_torch_lbfgs(
        who, learning_rate, max_iter, max_eval, tolerance_grad, tolerance_change, history_size,
        line_search_fn,
    )  # fmt: skip
    return torch_optimizer(
        who,
        scale_by_torch_lbfgs(
            learning_rate,
            max_iter=max_iter,
            max_eval=max_eval,
            tolerance_grad=tolerance_grad,
            tolerance_change=tolerance_change,
            history_size=history_size,
            line_search_fn=line_search_fn,
            who=who,
        ),
        maximize=False,
    )
