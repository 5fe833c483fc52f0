"""Gradient transformations, one module per family.

``scaling`` (constant factors, learning rates, schedules, zeros), ``momentum`` (trace, ema),
``adam`` (Adam, AMSGrad, Adamax, NAdam), ``rms`` (RMSProp, Adagrad), ``sign`` (Lion),
``decay`` (weight decay), ``clipping``, ``constrain`` (NaN handling), ``plateau`` (reducing
the step size on a plateau of the loss), ``lbfgs`` (Optax's L-BFGS preconditioner),
``torch_lbfgs`` (torch's whole L-BFGS step) with ``wolfe`` (its strong-Wolfe line search), and
Optax's line searches: ``linesearch`` (backtracking) and ``zoom``.
"""
