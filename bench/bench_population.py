"""What a Population buys: M members trained as one stacked model against M plain loops.

    python bench/bench_population.py                     # M = 1, 8, 16; 3 repeats
    python bench/bench_population.py --members 8 64 --repeats 5

The tutorial's net (4x128 sigmoid MLP, xavier_uniform, SGD lr 0.01, batch 32) on 4,000
random MNIST-shaped inputs, 125 steps = one epoch, one CPU thread. Per repeat, alternated:
(a) M separate plain PyTorch loops, one after another (each member's own forward, loss,
backward and SGD step: bench_train.py's floor), (b) one Population of the same M members
(gradflow.nn.Population: weights stacked in the forward, one torch.bmm per layer, one SGD
with a param group per member), and (c) the ceiling of the stacked route: each layer one
(M, out, in) leaf Parameter, no per-step stack, the members no longer modules of their own
(the issue's prototype). Each member has its own batch order. Reported: epoch time per
member (wall and CPU seconds, medians over repeats) and the paired ratios (a)/(b) and
(a)/(c), the median of each repeat's ratio with its range; > 1 means faster than separate
loops. All arms start from the same inits and see the same batches, so (a)'s and (b)'s
members stay equal; their largest parameter difference at the end is printed as a check.
`--device cuda` runs every arm on the GPU (times synchronised).
Benchmarks measure, they never assert: read the load average printed with the results.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

import torch
import torch.nn.functional as F

from gradflow.nn import MLP, Population

N_TRAIN, BATCH, LR = 4000, 32, 0.01


def tutorial_member(seed: int) -> MLP:
    """The tutorial's net, seeded as a separate run with this seed would build it."""
    torch.manual_seed(seed)
    return MLP("sigmoid", "xavier_uniform", depth=4, width=128)


def batch_orders(members: int, epoch: int) -> torch.Tensor:
    """(M, N_TRAIN): member m's shuffled order for this epoch (its own seed)."""
    gens = [torch.Generator().manual_seed(1000 * m + epoch) for m in range(members)]
    return torch.stack([torch.randperm(N_TRAIN, generator=g) for g in gens])


def separate_epoch(models, optimizers, x, y, orders) -> None:
    """(a) M plain loops, one after another."""
    for model, optimizer, order in zip(models, optimizers, orders, strict=True):
        loss_sum = torch.zeros(())
        for start in range(0, N_TRAIN, BATCH):
            idx = order[start : start + BATCH]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach()
        loss_sum.item()


def population_epoch(population, optimizer, x, y, orders) -> None:
    """(b) One stacked loop: the loss is the sum of the members' mean losses."""
    loss_sum = torch.zeros(len(population))
    for start in range(0, N_TRAIN, BATCH):
        idx = orders[:, start : start + BATCH]  # (M, B)
        logits = population(x[idx])
        per_sample = F.cross_entropy(logits.flatten(0, 1), y[idx].flatten(), reduction="none")
        losses = per_sample.view(idx.shape).mean(1)
        optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        optimizer.step()
        loss_sum += losses.detach()
    loss_sum.sum().item()


class StackedLeaves(torch.nn.Module):
    """(c) The ceiling of this route: each layer one (M, out, in) leaf Parameter (the issue's
    prototype), so no per-step stack, but the members are no longer modules of their own."""

    def __init__(self, members) -> None:
        super().__init__()
        layers = [list(m.tracked_layers().values()) for m in members]
        self.weights = torch.nn.ParameterList(
            torch.stack([lin.weight.detach() for lin in ls]) for ls in zip(*layers, strict=True)
        )
        self.biases = torch.nn.ParameterList(
            torch.stack([lin.bias.detach() for lin in ls]).unsqueeze(2)
            for ls in zip(*layers, strict=True)
        )

    def __len__(self) -> int:
        return len(self.weights[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.transpose(1, 2)
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = torch.baddbmm(b, w, h)
            h = torch.sigmoid(h) if i < len(self.weights) - 1 else h
        return h.transpose(1, 2)


def timed(fn, *args) -> tuple[float, float]:
    sync()
    wall, cpu = time.perf_counter(), time.process_time()
    fn(*args)
    sync()
    return time.perf_counter() - wall, time.process_time() - cpu


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def bench(members: int, repeats: int, x: torch.Tensor, y: torch.Tensor) -> dict[str, list]:
    models = [tutorial_member(m).to(x.device) for m in range(members)]
    population = Population(copy.deepcopy(models))
    leaves = StackedLeaves(models)
    optimizers = [torch.optim.SGD(m.parameters(), lr=LR) for m in models]
    groups = [{"params": m.parameters(), "lr": LR} for m in population.members]
    pop_optimizer = torch.optim.SGD(groups)
    leaves_optimizer = torch.optim.SGD(leaves.parameters(), lr=LR)
    results: dict[str, list] = {"separate": [], "population": [], "leaves": []}
    for epoch in range(repeats + 1):  # epoch 0 warms both arms up, untimed
        orders = batch_orders(members, epoch).to(x.device)
        arms = [
            ("separate", separate_epoch, (models, optimizers, x, y, orders)),
            ("population", population_epoch, (population, pop_optimizer, x, y, orders)),
            ("leaves", population_epoch, (leaves, leaves_optimizer, x, y, orders)),
        ]
        for name, fn, args in arms if epoch % 2 == 0 else arms[::-1]:
            wall, cpu = timed(fn, *args)
            if epoch > 0:
                results[name].append((wall / members, cpu / members))
    diff = max(
        (a - b).abs().max().item()
        for model, member in zip(models, population.members, strict=True)
        for a, b in zip(model.parameters(), member.parameters(), strict=True)
    )
    results["max_param_diff"] = [diff]
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--members", type=int, nargs="+", default=[1, 8, 16])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu", help="cpu, or cuda (times then synchronise)")
    args = p.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(N_TRAIN, 784, generator=g).to(args.device)
    y = torch.randint(0, 10, (N_TRAIN,), generator=g).to(args.device)
    print(
        f"torch {torch.__version__}, {args.device}, 1 CPU thread, "
        f"load average {os.getloadavg()[0]:.2f} (1 min)"
    )
    print(
        "| M | (a) separate loops, s/epoch per member (CPU s) | (b) Population | "
        "(c) stacked leaves | (a)/(b) [range] | (a)/(c) [range] | (b) vs (a) max param diff |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for members in args.members:
        r = bench(members, args.repeats, x, y)
        arms = [r["separate"], r["population"], r["leaves"]]
        medians = [[statistics.median(col) for col in zip(*arm, strict=True)] for arm in arms]
        cells = [f"{wall:.4f} ({cpu:.4f})" for wall, cpu in medians]
        ratios = []
        for arm in arms[1:]:
            rs = [a[0] / b[0] for a, b in zip(arms[0], arm, strict=True)]
            ratios.append(f"{statistics.median(rs):.2f} [{min(rs):.2f}-{max(rs):.2f}]")
        print(
            f"| {members} | {' | '.join(cells)} | {' | '.join(ratios)} "
            f"| {r['max_param_diff'][0]:.1e} |"
        )
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
