"""gradflow: see, measure and fix vanishing and exploding gradients (Lightning + Hydra)."""

__version__ = "0.1.0"
