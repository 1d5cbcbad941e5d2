"""Distillation methods behind one call: ``distill(method, data, ipc, *, seed, **options)``."""
from .registry import distill, list_methods, register

__all__ = ["distill", "list_methods", "register"]
