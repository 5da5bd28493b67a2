"""Schedules and helpers shared by the training scripts."""

from .schedules import gumbel_temperature, polynomial_decay_lr_lambda, tri_stage_lr_lambda

__all__ = ["gumbel_temperature", "polynomial_decay_lr_lambda", "tri_stage_lr_lambda"]
