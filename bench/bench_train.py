"""How far gradflow is from a hand-written PyTorch loop, and what parallel sweeps buy.

    python bench/bench_train.py                         # all three parts
    python bench/bench_train.py --parts epoch --repeats 5 --epochs 6
    python bench/bench_train.py --parts process sweep --process-repeats 3
    python bench/bench_train.py --parts process --baseline ../gradflow-old   # a change's cost

Part `epoch` (one process, variants alternated within each repeat): median steady-state
epoch time (first epoch dropped; training plus its validation) of (a) a plain PyTorch
loop over the same preloaded tensors, model, init, batch order and optimizer, (b) gradflow
through the real composition (`compose` + `gradflow.training.run.run`) with
`callbacks=none`, and (c) the same with `callbacks=default`, for the tutorial's sigmoid
and relu nets.
Part `process`: wall time of `scripts/train.py` (with the TensorBoard logger) against
`bench/plain_train.py` running the same training; with `--baseline <checkout>`, also that
checkout's `scripts/train.py` (its own `src` on PYTHONPATH, e.g. a `git worktree` of an
earlier commit), alternated with this one, so a change's cost is a ratio of one session.
Part `sweep`: a 12-job multirun with Hydra's basic launcher against `hydra/launcher=parallel`;
each joblib worker imports torch and Lightning and decodes the data once, so parallel pays
only when the jobs outweigh that start-up (hence 10 epochs a job by default).
Times are wall seconds, with CPU seconds beside them: CPU time is less shaken when other
work shares the cores. Benchmarks measure, they never assert (docs/architecture.md); run on a quiet
machine and read the load average printed with the results.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRAIN_SCRIPT = REPO / "scripts" / "train.py"
PLAIN_SCRIPT = REPO / "bench" / "plain_train.py"
# The tutorial's run: 4x128 MLP, xavier_uniform, SGD lr 0.01, batch 32, 5000/1000 subsample.
TUTORIAL = [
    "model=mlp",
    "model.depth=4",
    "model.width=128",
    "init=xavier_uniform",
    "optimizer=sgd",
    "optimizer.lr=0.01",
    "data.batch_size=32",
    "data.train_size=5000",
    "data.val_size=1000",
]
SWEEP = ["activation=sigmoid,tanh,relu,elu", "model=mlp,bn_mlp,res_mlp"]
# The sweep keeps each model's own depth (res_mlp needs an odd one) and sweeps the model, so
# none of TUTORIAL's model keys may follow it: a later `model=mlp` would replace the sweep.
SWEEP_TUTORIAL = [o for o in TUTORIAL if not o.startswith("model")]


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def has_default_callbacks() -> bool:
    return (REPO / "conf" / "callbacks" / "default.yaml").is_file()


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


class CPUEpochTimer:
    """Process CPU seconds of each epoch (as EpochTimer): less shaken by a busy machine."""

    instances: list[CPUEpochTimer] = []

    def __new__(cls):
        import lightning as L

        class _Timer(L.Callback):
            def __init__(self) -> None:
                self.cpu_s: list[float] = []

            def on_train_epoch_start(self, trainer, pl_module) -> None:
                self._start = time.process_time()

            def on_train_epoch_end(self, trainer, pl_module) -> None:
                self.cpu_s.append(time.process_time() - self._start)

        timer = _Timer()
        cls.instances.append(timer)
        return timer


# ------------------------------------------------------------------------- part 1: epochs


def compose_run(overrides: list[str], out: Path, cpu_timer: bool = False):
    """conf/train.yaml composed as scripts/train.py would, writing under `out`."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from gradflow.config import config_dir

    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.log_dir = str(out / "logs")
        cfg.paths.output_dir = str(out / "run")
        if cpu_timer:
            cfg.callbacks = cfg.callbacks or {}
            cfg.callbacks.bench_cpu_timer = {"_target_": f"{__name__}.CPUEpochTimer"}
    return cfg


def plain_loop(cfg, epochs: int) -> tuple[list[float], list[float], float]:
    """(a) The floor: a hand-written loop on the objects gradflow builds from `cfg`.

    Same model class and init (seeded as the run seeds it), the data module's preloaded
    tensors, its batch order (gradflow.data.epoch_seed), the configured optimizer; loss and
    accuracy accumulated on the device and fetched once per epoch (which also waits for a
    GPU, with trainer=gpu), validation each epoch.
    """
    import torch
    from hydra.utils import instantiate

    from gradflow.data import epoch_seed
    from gradflow.training.run import build_model

    device = "cuda" if cfg.trainer.accelerator == "gpu" else "cpu"  # trainer=gpu: on the GPU
    torch.set_num_threads(int(cfg.torch_threads))
    torch.manual_seed(cfg.seed)
    data = instantiate(cfg.data)
    net = build_model(cfg, data).to(device)
    data.setup("fit")
    (x, y), (xv, yv) = ([t.to(device) for t in split] for split in (data.train_data, data.val_data))
    optimizer = instantiate(cfg.optimizer)(net.parameters())
    loss_fn = torch.nn.CrossEntropyLoss()
    n, bs = len(y), cfg.data.batch_size
    times, cpu, val_acc = [], [], float("nan")
    for epoch in range(epochs):
        start, start_cpu = time.perf_counter(), time.process_time()
        net.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.long, device=device)
        gen = torch.Generator().manual_seed(epoch_seed(cfg.data.shuffle_seed, epoch))
        order = torch.randperm(n, generator=gen).to(device)
        for i in range(0, n, bs):
            idx = order[i : i + bs]
            xb, yb = x[idx], y[idx]
            logits = net(xb)
            loss = loss_fn(logits, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(yb)
            correct += (logits.argmax(1) == yb).sum()
        net.eval()
        with torch.no_grad():
            vlogits = net(xv)
            val_loss = loss_fn(vlogits, yv)
            val_hits = (vlogits.argmax(1) == yv).sum()
        _ = (loss_sum.item(), correct.item(), val_loss.item())
        val_acc = val_hits.item() / len(yv)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return times, cpu, val_acc


def gradflow_run(cfg) -> tuple[list[float], list[float], float]:
    from gradflow.training.run import run

    summary = run(cfg)
    if summary["status"] != "completed":
        raise RuntimeError(f"gradflow run {summary['status']}: {summary['error']}")
    cpu = CPUEpochTimer.instances[-1].cpu_s if "bench_cpu_timer" in cfg.callbacks else []
    return summary["timing"]["epoch_s"], cpu, summary["metrics"]["final"]["val/acc"]


def part_epoch(args: argparse.Namespace) -> None:
    variants = ["a", "b"] + (["c"] if has_default_callbacks() else [])
    if "c" not in variants:
        print("conf/callbacks/default.yaml is missing: skipping (c)")
    print(
        f"\n## Part 1: steady-state epoch time ({args.epochs} epochs, first dropped, "
        f"{args.repeats} repeats, load {load_average()})"
    )
    # (activation, variant) -> one list of steady-state epoch times per repeat.
    wall_s = {(act, v): [] for act in args.activations for v in variants}
    cpu_s = {(act, v): [] for act in args.activations for v in variants}
    accs: dict[tuple[str, str], float] = {}
    bar = [] if args.progress_bar else ["trainer.enable_progress_bar=false"]
    with tempfile.TemporaryDirectory(prefix="gradflow-bench-") as tmp:
        for rep in range(args.repeats):
            for act in args.activations:
                # Rotate the order each repeat so no variant always runs first or warm.
                order = variants[rep % len(variants) :] + variants[: rep % len(variants)]
                for v in order:
                    callbacks = "default" if v == "c" else "none"
                    overrides = [
                        f"activation={act}",
                        *TUTORIAL,
                        f"callbacks={callbacks}",
                        f"logger={args.logger}",
                        f"trainer.max_epochs={args.epochs}",
                        *bar,
                        *args.override,
                    ]
                    cfg = compose_run(overrides, Path(tmp) / f"{rep}-{act}-{v}", cpu_timer=True)
                    run_fn = plain_loop if v == "a" else lambda cfg, _: gradflow_run(cfg)
                    epoch_s, epoch_cpu_s, acc = run_fn(cfg, args.epochs)
                    wall_s[act, v].append(epoch_s[1:])
                    cpu_s[act, v].append(epoch_cpu_s[1:])
                    accs[act, v] = acc
    for name, table in (("wall", wall_s), ("CPU", cpu_s)):
        print(
            f"\n{name} seconds per epoch; (a) plain loop, (b) callbacks=none, "
            "(c) callbacks=default. Times: median (mean) over every steady-state epoch; "
            "ratios: median over repeats of each repeat's ratio (the variants of a repeat "
            "ran back to back, so slow spells of the machine cancel), [min-max] beside."
        )
        print("| config | (a) | (b) | (c) | b/a | c/a | val/acc a, b, c |")
        print("|---|---|---|---|---|---|---|")
        for act in args.activations:
            flat = {v: [t for rep in table[act, v] for t in rep] for v in variants}
            cells = [f"{median(flat[v]):.3f} ({statistics.fmean(flat[v]):.3f})" for v in variants]
            cells += ["n/a"] * (3 - len(cells))
            ratios = [paired_ratio(table[act, "a"], table[act, v]) for v in variants[1:]]
            ratios += ["n/a"] * (2 - len(ratios))
            same = ", ".join(f"{accs[act, v]:.4f}" for v in variants)
            print(f"| {act} | {' | '.join(cells)} | {' | '.join(ratios)} | {same} |")
    print(f"(load after: {load_average()})")


def paired_ratio(floor: list[list[float]], ours: list[list[float]]) -> str:
    """Median over repeats of median(ours) / median(floor) within the repeat, with the range."""
    ratios = [median(o) / median(f) for f, o in zip(floor, ours, strict=True) if f and o]
    if not ratios:
        return "n/a"
    return f"{median(ratios):.2f} [{min(ratios):.2f}-{max(ratios):.2f}]"


# ---------------------------------------------------------------------- part 2: processes


def timed(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system, its children included) of `cmd`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def times_table(results: dict[str, list[tuple[float, float]]], first: str) -> None:
    print(f"| {first} | median wall s | median CPU s | wall of each run |")
    print("|---|---|---|---|")
    for key, xs in results.items():
        walls, cpus = [w for w, _ in xs], [c for _, c in xs]
        print(
            f"| {key} | {median(walls):.1f} | {median(cpus):.1f} "
            f"| {', '.join(f'{w:.1f}' for w in walls)} |"
        )


def part_process(args: argparse.Namespace) -> None:
    callbacks = ["none"] + (["default"] if has_default_callbacks() else [])
    print(
        f"\n## Part 2: whole process, {args.process_epochs} epochs "
        f"({args.process_repeats} repeats, load {load_average()})"
    )
    results: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="gradflow-bench-") as tmp:
        for rep in range(args.process_repeats):
            for act in args.activations:
                cmds = {
                    f"{act} plain": [
                        sys.executable,
                        str(PLAIN_SCRIPT),
                        "--activation",
                        act,
                        "--epochs",
                        str(args.process_epochs),
                    ],
                }
                envs: dict[str, dict[str, str]] = {}
                for cb in callbacks:
                    cmds[f"{act} gradflow callbacks={cb}"] = [
                        sys.executable,
                        str(TRAIN_SCRIPT),
                        f"activation={act}",
                        *TUTORIAL,
                        f"trainer.max_epochs={args.process_epochs}",
                        f"callbacks={cb}",
                        f"paths.log_dir={tmp}/logs",
                        *args.override,
                    ]
                    if args.baseline is not None:
                        name = f"{act} baseline callbacks={cb}"
                        cmds[name] = [
                            sys.executable,
                            str(args.baseline / "scripts" / "train.py"),
                            *cmds[f"{act} gradflow callbacks={cb}"][2:],
                            *args.baseline_override,
                        ]
                        envs[name] = {**os.environ, "PYTHONPATH": str(args.baseline / "src")}
                names = list(cmds) if rep % 2 == 0 else list(cmds)[::-1]
                for name in names:
                    results.setdefault(name, []).append(timed(cmds[name], REPO, envs.get(name)))
    print()
    times_table(results, "process")
    for act in args.activations:
        plain = median([w for w, _ in results[f"{act} plain"]])
        for cb in callbacks:
            ours = median([w for w, _ in results[f"{act} gradflow callbacks={cb}"]])
            print(f"{act}: gradflow callbacks={cb} / plain = {ours / plain:.2f} (wall)")
            if args.baseline is not None:
                base = median([w for w, _ in results[f"{act} baseline callbacks={cb}"]])
                print(f"{act}: gradflow callbacks={cb} / baseline = {ours / base:.2f} (wall)")
    print(f"(load after: {load_average()})")


# -------------------------------------------------------------------------- part 3: sweep


def part_sweep(args: argparse.Namespace) -> None:
    callbacks = "default" if has_default_callbacks() else "none"
    print(
        f"\n## Part 3: 12-job sweep ({' '.join(SWEEP)}), {args.sweep_epochs} epochs each, "
        f"callbacks={callbacks} ({args.sweep_repeats} repeats, load {load_average()})"
    )
    launchers = {"basic (serial)": [], "joblib": ["hydra/launcher=parallel"]}
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in launchers}
    with tempfile.TemporaryDirectory(prefix="gradflow-bench-") as tmp:
        for rep in range(args.sweep_repeats):
            names = list(launchers) if rep % 2 == 0 else list(launchers)[::-1]
            for name in names:
                cmd = [
                    sys.executable,
                    str(TRAIN_SCRIPT),
                    "-m",
                    *SWEEP,
                    *launchers[name],
                    *SWEEP_TUTORIAL,
                    f"trainer.max_epochs={args.sweep_epochs}",
                    f"callbacks={callbacks}",
                    f"paths.log_dir={tmp}/logs",
                    *args.override,
                ]
                results[name].append(timed(cmd, REPO))
    print()
    times_table(results, "launcher")
    ratio = median([w for w, _ in results["joblib"]]) / median(
        [w for w, _ in results["basic (serial)"]]
    )
    print(f"joblib / serial = {ratio:.2f} (wall) on {os.cpu_count()} cores")
    print(f"(load after: {load_average()})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--parts",
        nargs="+",
        default=["epoch", "process", "sweep"],
        choices=["epoch", "process", "sweep"],
    )
    parser.add_argument("--activations", nargs="+", default=["sigmoid", "relu"])
    parser.add_argument("--repeats", type=int, default=8, help="part 1 repeats")
    parser.add_argument(
        "--epochs", type=int, default=10, help="part 1 epochs per run (the tutorial's 10)"
    )
    parser.add_argument("--logger", default="tensorboard", help="part 1 logger group option")
    parser.add_argument(
        "--progress-bar",
        action="store_true",
        help="part 1: keep the progress bar (off: the loops alone are compared)",
    )
    parser.add_argument("--process-repeats", type=int, default=3)
    parser.add_argument("--process-epochs", type=int, default=10)
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="part 2: another checkout of gradflow to time beside this one",
    )
    parser.add_argument(
        "--baseline-override",
        nargs="*",
        default=[],
        help="extra Hydra overrides for the baseline's runs only",
    )
    parser.add_argument("--sweep-repeats", type=int, default=1)
    parser.add_argument("--sweep-epochs", type=int, default=10)
    parser.add_argument(
        "--override", nargs="*", default=[], help="extra Hydra overrides for every gradflow run"
    )
    args = parser.parse_args()
    print(f"gradflow bench on {os.cpu_count()} cores, python {sys.version.split()[0]}")
    for part in args.parts:
        {"epoch": part_epoch, "process": part_process, "sweep": part_sweep}[part](args)


if __name__ == "__main__":
    main()
