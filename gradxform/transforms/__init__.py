"""Gradient transformations, one module per family.

``scaling`` (constant factors, learning rates, schedules), ``momentum`` (trace, ema),
``adaptive`` (Adam and the other per-coordinate preconditioners), ``decay`` (weight decay),
``clipping`` (clipping and NaN handling).
"""
