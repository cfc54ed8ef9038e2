"""What the tests share: a tiny run's overrides, tiny MNIST-shaped IDX files and
scripts/train.py started as a process of its own."""

from __future__ import annotations

import logging
import os
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from tensorboard.backend.event_processing import event_accumulator as ea

REPO_ROOT = Path(__file__).resolve().parents[1]

# A run small enough for a unit test: offline sample, no download attempt, one epoch.
TINY = [
    "data.train_size=256",
    "data.val_size=128",
    "data.download=false",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "model.width=32",
]


class _Collected(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def warnings_logged(name: str = "gradflow") -> Iterator[list[str]]:
    """The warnings (and errors) that loggers under `name` log meanwhile, as messages."""
    handler, logger = _Collected(), logging.getLogger(name)
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


# torchvision's file names for MNIST and Fashion-MNIST: train images and labels, test ones.
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def idx_bytes(array: np.ndarray) -> bytes:
    """An array as a uint8 IDX file: magic (0, 0, 8, ndim), big-endian dims, the bytes."""
    header = struct.pack(f">BBBB{array.ndim}I", 0, 0, 8, array.ndim, *array.shape)
    return header + array.astype(np.uint8).tobytes()


def fake_mnist(n_train: int = 60, n_test: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    """Random 28 x 28 images and labels 0-9, by IDX file name."""
    rng = np.random.default_rng(seed)
    return dict(
        zip(
            IDX_FILES,
            [
                rng.integers(0, 256, (n_train, 28, 28)),
                rng.integers(0, 10, n_train),
                rng.integers(0, 256, (n_test, 28, 28)),
                rng.integers(0, 10, n_test),
            ],
            strict=True,
        )
    )


def write_raw(folder: Path, arrays: dict[str, np.ndarray]) -> Path:
    """The arrays as plain IDX files in `folder` (created); returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        (folder / name).write_bytes(idx_bytes(array))
    return folder


# The sweep the TensorBoard tests look at: a sigmoid net, plain and with BatchNorm.
SIGMOID_BN_SWEEP = ["model=mlp,bn_mlp", "activation=sigmoid", "trainer.max_epochs=2"]
SIGMOID_BN_JOBS = ["0_model=mlp", "1_model=bn_mlp"]  # its job directories: what varies


def train_sweep(root: Path, *overrides: str) -> Path:
    """`scripts/train.py -m` with TINY sizes (`overrides` win) into <root>/sweep (its jobs
    and, at the end, its report); returns the sweep directory."""
    sweep = root / "sweep"
    cmd = [sys.executable, str(REPO_ROOT / "scripts" / "train.py"), "-m", *TINY, *overrides,
           f"hydra.sweep.dir={sweep}", f"paths.log_dir={root / 'logs'}",
           f"paths.data_dir={root / 'data'}"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return sweep


TRAIN_SCRIPT = REPO_ROOT / "scripts" / "train.py"
# Long enough epochs (250 steps, about half a second here) to be killed in the middle of
# one; Adam so the net learns.
KILLABLE = [
    "data.train_size=2000",
    "data.val_size=200",
    "data.batch_size=8",
    "data.download=false",
    "trainer.enable_progress_bar=false",
    "model.width=32",
    "optimizer=adam",
]


def start_train(*args: str, log_dir: Path) -> subprocess.Popen:
    """`scripts/train.py *args` running, its logs under `log_dir`, its data beside it."""
    cmd = [sys.executable, str(TRAIN_SCRIPT), *args, f"paths.log_dir={log_dir}"]
    cmd.append(f"paths.data_dir={log_dir.parent / 'data'}")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(root: Path, pattern: str, proc: subprocess.Popen, timeout: float = 240) -> Path:
    """The first file under `root` matching `pattern`, once the running `proc` wrote it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(root.glob(pattern))
        if found:
            return found[0]
        if proc.poll() is not None:
            raise AssertionError(f"exited early ({proc.returncode}): {proc.stderr.read()[-3000:]}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"{root}/{pattern} never appeared")


def processes_with(variable: str) -> dict[int, str]:
    """{pid: command line} of the live processes (zombies aside, this one too) whose
    environment holds `variable` (NAME=value): what a test started and what they started."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rpartition(")")[2].split()[0]
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError):  # gone, or not ours to read
            continue
        if variable.encode() in environ and state not in ("Z", "X"):
            found[int(proc.name)] = cmdline
    return found


def judge_healthy_but(**numbers):
    """The verdict on a healthy net's numbers (ratio 1, total norm 1, nothing saturated or
    dead, 10 classes) with `numbers` replaced."""
    from gradflow.diagnostics import judge

    base = dict(first_last_ratio=1.0, total_norm=1.0, act_saturated={}, act_dead={},
                saturation="two_sided", num_classes=10)  # fmt: skip
    return judge(**{**base, **numbers})


def next_second() -> None:
    """Wait for the clock's next second. TensorBoard reads a run's event files in name
    order, and a file is named by the second its writer started, then a counter of the
    process's writers (`...1796198909.host.pid.10` sorts before `...pid.9`): a resume in
    the same second as the run it continues, which only a sub-second test run makes, would
    be read before it."""
    time.sleep(1.0 - time.time() % 1.0 + 0.01)


def tensorboard_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """What TensorBoard shows: every event file of the directory, purges applied."""
    acc = ea.EventAccumulator(str(run_dir), size_guidance={ea.SCALARS: 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
