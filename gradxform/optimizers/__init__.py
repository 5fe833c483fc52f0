"""The optimizers: each one ``chain`` of transformations, grouped by family.

``sgd`` (momentum), ``adam`` (Adam, AdamW, AMSGrad, Adamax, NAdam), ``rms`` (Adagrad,
RMSprop), ``sign`` (Lion), ``lbfgs`` (L-BFGS). Defaults and hyperparameter names are
PyTorch's where ``torch.optim`` has the optimizer, and given the same hyperparameters each
reproduces it step for step.
"""
