"""Moving training between frameworks: ``torch_state`` converts the state of a torch-named
optimizer to and from ``torch.optim``'s ``state_dict()`` (``gradxform.from_torch_state``,
``gradxform.to_torch_state``). torch is optional: it is imported only when these run.
"""
