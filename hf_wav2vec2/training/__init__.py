"""Schedules, optimizer parameter groups and recipes shared by the training scripts."""

from .optimizer import adamw, parameter_groups
from .recipes import (
    FINETUNING_RECIPES,
    PRETRAINING_RECIPES,
    FinetuningRecipe,
    PretrainingRecipe,
    choose_finetuning_recipe,
    choose_pretraining_recipe,
)
from .schedules import gumbel_temperature, polynomial_decay_lr_lambda, tri_stage_lr_lambda

__all__ = [
    "FINETUNING_RECIPES", "PRETRAINING_RECIPES", "FinetuningRecipe", "PretrainingRecipe", "adamw",
    "choose_finetuning_recipe", "choose_pretraining_recipe", "gumbel_temperature", "parameter_groups",
    "polynomial_decay_lr_lambda", "tri_stage_lr_lambda",
]
