"""The optimisation: named recipes, targets and the one loop that runs them."""

from backfire.protect.engine import Protection, protect
from backfire.protect.recipes import PAPER, RECIPES, Recipe, Term, get_recipe
from backfire.protect.targets import TARGET_KINDS, TargetKind, make_target, solid_colour

__all__ = ["PAPER", "TARGET_KINDS", "TargetKind", "RECIPES", "Protection", "Recipe", "Term", "get_recipe", "make_target", "protect", "solid_colour"]
