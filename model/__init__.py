"""Pure torch/MONAI model code: arrays in, masks and numbers out.

This package imports no other project package. Heavy imports (torch, MONAI) live in the
modules that need them, so `model.preprocessing` and `model.metrics` stay cheap.
"""
