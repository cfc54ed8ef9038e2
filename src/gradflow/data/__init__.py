"""Data: datasets loaded once, subsampled, scaled and kept on the training device."""

from gradflow.data.mnist import DATASETS, MNISTDataModule
from gradflow.data.regression import RegressionDataModule
from gradflow.data.tensors import PreloadedLoader, TensorDataModule, epoch_seed
from gradflow.data.xor import XORDataModule

__all__ = [
    "DATASETS",
    "MNISTDataModule",
    "PreloadedLoader",
    "RegressionDataModule",
    "TensorDataModule",
    "XORDataModule",
    "epoch_seed",
]
