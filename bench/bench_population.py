"""What a Population buys: in one process (the engine), and as whole sweeps (processes).

    python bench/bench_population.py                     # both parts
    python bench/bench_population.py --parts engine --members 8 64 --repeats 5
    python bench/bench_population.py --parts process --process-repeats 3
    python bench/bench_population.py --parts process --override torch_threads=2
    python bench/bench_population.py --parts process --device cuda   # trainer=gpu, 64 seeds

Part `engine` (M = 1, 8, 16 unless --members; 3 repeats): the tutorial's net (4x128 sigmoid
MLP, xavier_uniform, SGD lr 0.01, batch 32) on 4,000 random MNIST-shaped inputs, 125 steps
= one epoch, one CPU thread. Per repeat, alternated:
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

Part `process` (M = 8 seeds unless --members, 64 with --device cuda): whole
`scripts/train.py` processes of the tutorial run (`activation=sigmoid
data.download=false trainer.enable_progress_bar=false`, 10 epochs unless
--process-epochs), alternated per repeat as bench_train.py's process part: (1) one single
run, (2) the M-seed sweep `-m hydra/launcher=population seed=0,...,M-1` (one population),
(3) the same sweep with Hydra's basic launcher (M runs one after another: what a study
costs without populations). Reported: wall and CPU seconds (medians; CPU includes the
children) and the paired ratios (2)/(1), the issue's target being <= 2, and (3)/(2). Then
the population's epoch time per member (summary.json's `timing.epoch_s`, the population's
wall time per epoch, the same in every member, divided by `population.members`; epochs
2..N) against `bench_train.plain_loop`'s epoch time for the same composed config with
seed 0, run in this process in the same repeat: < 1 means a member's epoch costs less
than a bare PyTorch loop's. `--device cuda` appends `trainer=gpu`. Each process writes
under a temporary log dir, removed after it.
Benchmarks measure, they never assert: read the load average printed with the results.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from bench_train import (
    REPO,
    TRAIN_SCRIPT,
    compose_run,
    load_average,
    median,
    paired_ratio,
    plain_loop,
    timed,
    times_table,
)

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


def timed_call(fn, *args) -> tuple[float, float]:
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
            wall, cpu = timed_call(fn, *args)
            if epoch > 0:
                results[name].append((wall / members, cpu / members))
    diff = max(
        (a - b).abs().max().item()
        for model, member in zip(models, population.members, strict=True)
        for a, b in zip(model.parameters(), member.parameters(), strict=True)
    )
    results["max_param_diff"] = [diff]
    return results


def part_engine(args: argparse.Namespace) -> None:
    members_list = args.members or [1, 8, 16]
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(N_TRAIN, 784, generator=g).to(args.device)
    y = torch.randint(0, 10, (N_TRAIN,), generator=g).to(args.device)
    print(
        f"\n## Engine: one epoch per repeat, {args.device}, 1 CPU thread "
        f"({args.repeats} repeats, load {load_average()})\n"
    )
    print(
        "| M | (a) separate loops, s/epoch per member (CPU s) | (b) Population | "
        "(c) stacked leaves | (a)/(b) [range] | (a)/(c) [range] | (b) vs (a) max param diff |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for members in members_list:
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
    print(f"(load after: {load_average()})")


# The tutorial's run as a user types it (conf/train.yaml's defaults are the tutorial's net).
TUTORIAL_RUN = ["activation=sigmoid", "data.download=false", "trainer.enable_progress_bar=false"]
SINGLE, PLAIN = "(1) single run", "plain PyTorch loop, in this process"


def sweep_name(launcher: str, members: int) -> str:
    number = "(2)" if launcher == "population" else "(3)"
    return f"{number} {launcher} sweep, {members} seeds"


def population_summaries(log_dir: Path, members: int) -> list[dict]:
    """The summary.json of each job of the population sweep under `log_dir` (a job that
    trained alone has no `population` entry; a note is printed if any is missing)."""
    summaries = [json.loads(p.read_text()) for p in sorted(log_dir.rglob("summary.json"))]
    together = [s for s in summaries if "population" in s]
    statuses = sorted({s.get("status") for s in summaries})
    if len(together) != members or statuses != ["completed"]:
        print(
            f"note: {len(summaries)} summaries, {len(together)} of population members, "
            f"statuses {statuses} (expected {members} completed members)"
        )
    return together


def member_epoch_s(summaries: list[dict]) -> list[float]:
    """Each population's wall time per epoch (epochs 2..N) divided by its members: what one
    member's epoch costs. Every member of a population records the same epoch_s, so each
    population is counted once."""
    populations = {tuple(s["population"]["run_dirs"]): s for s in summaries}
    return [
        t / s["population"]["members"]
        for s in populations.values()
        for t in s["timing"]["epoch_s"][1:]
    ]


def part_process(args: argparse.Namespace) -> None:
    sizes = args.members or ([64] if args.device == "cuda" else [8])
    device = ["trainer=gpu"] if args.device == "cuda" else []
    run = [*TUTORIAL_RUN, f"trainer.max_epochs={args.process_epochs}", *device]
    print(
        f"\n## Processes: the tutorial run ({' '.join(run)}), sweeps of {sizes} seeds "
        f"({args.process_repeats} repeats, load {load_average()})"
    )
    arms = {SINGLE: [sys.executable, str(TRAIN_SCRIPT), *run, *args.override]}
    for m in sizes:
        seeds = "seed=" + ",".join(str(s) for s in range(m))
        for launcher in ("population", "basic"):
            arms[sweep_name(launcher, m)] = [
                sys.executable,
                str(TRAIN_SCRIPT),
                "-m",
                f"hydra/launcher={launcher}",
                seeds,
                *run,
                *args.override,
            ]
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in arms}
    plain_s: list[list[float]] = []  # per repeat: the plain loop's epochs 2..N
    member_s: dict[int, list[list[float]]] = {m: [] for m in sizes}  # per repeat, per size
    accs: dict[str, float | None] = {}  # val/acc of seed 0 after the last repeat
    with tempfile.TemporaryDirectory(prefix="gradflow-bench-") as tmp:
        for rep in range(args.process_repeats):
            names = [*arms, PLAIN]
            for i, name in enumerate(names if rep % 2 == 0 else names[::-1]):
                log_dir = Path(tmp) / f"{rep}-{i}"
                if name == PLAIN:
                    cfg = compose_run([*run, "seed=0", *args.override], log_dir)
                    epoch_s, _, accs[PLAIN] = plain_loop(cfg, args.process_epochs)
                    plain_s.append(epoch_s[1:])
                else:
                    cmd = [*arms[name], f"paths.log_dir={log_dir}"]
                    results[name].append(timed(cmd, REPO))
                    m = next((m for m in sizes if name == sweep_name("population", m)), None)
                    if m is not None:
                        summaries = population_summaries(log_dir, m)
                        member_s[m].append(member_epoch_s(summaries))
                        seed0 = [s for s in summaries if s["config"]["seed"] == 0]
                        accs[name] = seed0[0]["metrics"]["final"]["val/acc"] if seed0 else None
                shutil.rmtree(log_dir, ignore_errors=True)
    print()
    times_table(results, "process")
    print("\n| paired ratio, median over repeats [min-max] | wall | CPU |")
    print("| --- | --- | --- |")
    for m in sizes:
        pop, basic = results[sweep_name("population", m)], results[sweep_name("basic", m)]
        for label, ours, floor in (
            (f"(2)/(1), {m} seeds (target <= 2)", pop, results[SINGLE]),
            (f"(3)/(2), {m} seeds", basic, pop),
        ):
            cells = [paired_ratio([[x[k]] for x in floor], [[x[k]] for x in ours]) for k in (0, 1)]
            print(f"| {label} | {' | '.join(cells)} |")
    print(
        f"\nSeconds per epoch, epochs 2..{args.process_epochs}: medians over every epoch of "
        "every repeat; the ratio is the median over repeats of each repeat's ratio."
    )
    print("| seeds | plain PyTorch loop | population member (epoch / M) | member / plain |")
    print("| --- | --- | --- | --- |")
    flat_plain = [t for rep in plain_s for t in rep]
    for m in sizes:
        flat = [t for rep in member_s[m] for t in rep]
        ratio = paired_ratio(plain_s, member_s[m])
        print(f"| {m} | {median(flat_plain):.4f} | {median(flat):.4f} | {ratio} |")
    print(
        "val/acc of seed 0 after the last repeat: "
        + ", ".join(
            f"{name} {acc:.4f}" if acc is not None else f"{name} n/a" for name, acc in accs.items()
        )
    )
    print(f"(load after: {load_average()})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--parts", nargs="+", default=["engine", "process"], choices=["engine", "process"]
    )
    p.add_argument(
        "--members",
        type=int,
        nargs="+",
        default=None,
        help="population sizes (engine: 1 8 16; process: the sweep's seeds, 8, or 64 on cuda)",
    )
    p.add_argument("--repeats", type=int, default=3, help="engine repeats")
    p.add_argument(
        "--device",
        default="cpu",
        help="cpu, or cuda (engine: times synchronised; process: trainer=gpu)",
    )
    p.add_argument("--process-repeats", type=int, default=3)
    p.add_argument("--process-epochs", type=int, default=10, help="the tutorial's 10")
    p.add_argument(
        "--override", nargs="*", default=[], help="extra Hydra overrides for every process run"
    )
    args = p.parse_args()
    print(
        f"torch {torch.__version__}, {os.cpu_count()} cores, python {sys.version.split()[0]}, "
        f"load average {load_average()}"
    )
    for part in args.parts:
        {"engine": part_engine, "process": part_process}[part](args)


if __name__ == "__main__":
    main()
