"""RegressionDataModule: y = f(x) on an interval, the 1-D fit of dying-ReLU studies.

Lu et al. (2019, "Dying ReLU and initialization") train deep, narrow ReLU nets to fit
functions such as |x| or sin(x) on [-sqrt(3), sqrt(3)] (inputs of unit variance) with the
mean squared error; a net whose ReLUs all die collapses to a constant, whose validation
loss is the targets' variance (`Task.chance_loss`).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from gradflow.checks import joined
from gradflow.data.tensors import Split, TensorDataModule
from gradflow.rules.data import REGRESSION_FUNCTIONS, regression_rules

# The functions to fit, by name; each maps a tensor elementwise.
FUNCTIONS = {
    "abs": torch.abs,
    "sin": torch.sin,
    "square": torch.square,
}
joined(FUNCTIONS, REGRESSION_FUNCTIONS, "the regression functions")
SQRT3 = math.sqrt(3.0)


class RegressionDataModule(TensorDataModule):
    """x ~ U(low, high), y = function(x); `noise` (a standard deviation) is added to the
    training targets only, so val/loss measures the fit to the function itself. Train and
    validation draw their x apart, from one generator seeded by `subsample_seed`; the
    probe batch is the first validation samples.
    """

    input_shape = (1,)
    task_name = "regression"

    def __init__(
        self,
        function: str = "abs",
        low: float = -SQRT3,
        high: float = SQRT3,
        train_size: int = 1000,
        val_size: int = 256,
        noise: float = 0.0,
        batch_size: int = 64,
        val_batch_size: int = 256,
        shuffle_seed: int = 42,
        subsample_seed: int = 7,
        preload: bool = True,
    ) -> None:
        super().__init__(batch_size, val_batch_size, shuffle_seed, preload=preload)
        regression_rules(
            function=function,
            low=low,
            high=high,
            train_size=train_size,
            val_size=val_size,
            noise=noise,
            subsample_seed=subsample_seed,
        )
        self.function, self.low, self.high = function, float(low), float(high)
        self.train_size, self.val_size = train_size, val_size
        self.noise, self.subsample_seed = noise, subsample_seed

    def load(self) -> tuple[Split, Split]:
        generator = torch.Generator().manual_seed(self.subsample_seed)
        f = FUNCTIONS[self.function]

        def draw(n: int) -> torch.Tensor:
            return self.low + (self.high - self.low) * torch.rand(n, 1, generator=generator)

        train_x, val_x = draw(self.train_size), draw(self.val_size)
        train_y = f(train_x) + self.noise * torch.randn(train_x.shape, generator=generator)
        return (train_x, train_y), (val_x, f(val_x))

    @property
    def source_info(self) -> dict[str, Any] | None:
        return {
            "source": "synthetic_regression",
            "dataset": "regression",
            "description": f"y = {self.function}(x), x ~ U({self.low:.3g}, {self.high:.3g}), "
            f"noise std {self.noise}",
            "train_size": self.train_size,
            "val_size": self.val_size,
        }
