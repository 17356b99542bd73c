"""Inference policies: each a small class with `.run(program, *args, **kwargs) -> Result`."""
