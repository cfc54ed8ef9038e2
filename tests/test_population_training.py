"""Members of a population leave what their own runs leave, with the same numbers: every
TensorBoard tag at the same steps, step 0 to float32 tolerance, the same final accuracy and
verdict; per-member learning rates, Adam, BatchNorm and residual nets; a diverging member
frozen while the others go on; a rejected member left out; the memory split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

from gradflow.config import config_dir
from gradflow.data.tensors import PopulationLoader, PreloadedLoader
from gradflow.errors import ConfigError
from gradflow.names import COMPLETED, DIVERGED, SUMMARY_FILE
from gradflow.nn import MLP
from gradflow.training import population
from gradflow.training.population import estimate_bytes, split_sizes, train_population
from gradflow.training.run import run
from gradflow.training.stacking import Member, population_key
from tests.helpers import TINY, next_second, tensorboard_scalars, warnings_logged

# Two epochs of 8 steps: step 0, logged steps and both epoch ends are compared.
TWO_EPOCHS = [*TINY, "trainer.max_epochs=2"]
# Where float32 sums may be ordered differently (bmm against mm): a few ulps.
STEP0 = {"rel": 1e-5, "abs": 1e-6}


def compose_at(tmp_path: Path, name: str, *overrides: str) -> DictConfig:
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=[*TWO_EPOCHS, *overrides])
    with open_dict(cfg):
        cfg.paths.log_dir = str(tmp_path / "logs")
        cfg.paths.output_dir = str(tmp_path / name)
        cfg.paths.data_dir = str(tmp_path / "data")
    return cfg


def events(run_dir: Path) -> dict[tuple[str, str], list[tuple[int, float | None]]]:
    """{(plugin, tag): [(step, scalar value or None), ...]} over a run's event files."""
    found: dict[tuple[str, str], list[tuple[int, float | None]]] = {}
    for path in sorted(run_dir.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                plugin = value.metadata.plugin_data.plugin_name or "scalars"
                number = value.simple_value if value.HasField("simple_value") else None
                if number is None and plugin == "scalars" and value.tensor.float_val:
                    number = value.tensor.float_val[0]
                found.setdefault((plugin, value.tag), []).append((event.step, number))
    return found


def population_and_runs(tmp_path: Path, variants: list[list[str]], *shared: str):
    """Train `variants` as one population and each as a run of its own; both summaries."""
    members = [
        Member(compose_at(tmp_path, f"member{i}", *v, *shared), tmp_path / f"member{i}", v)
        for i, v in enumerate(variants)
    ]
    together = train_population(members)
    alone = [run(compose_at(tmp_path, f"alone{i}", *v, *shared)) for i, v in enumerate(variants)]
    return together, alone


def assert_same_run(tmp_path: Path, i: int, member: dict, alone: dict) -> None:
    assert member["status"] == alone["status"]
    assert member["error"] == alone["error"]
    assert (member["epochs"], member["steps"]) == (alone["epochs"], alone["steps"])
    assert set(member) == {*alone, "population", "populations"}  # and where it trained
    assert member["config"]["seed"] == alone["config"]["seed"]
    final, final_alone = member["metrics"]["final"], alone["metrics"]["final"]
    assert set(final) == set(final_alone)
    if "val/acc" in final:
        assert final["val/acc"] == pytest.approx(final_alone["val/acc"], abs=0.01)
    assert member["verdict"]["labels"] == alone["verdict"]["labels"]
    mine, theirs = events(tmp_path / f"member{i}"), events(tmp_path / f"alone{i}")
    assert set(mine) == set(theirs)  # scalars, histograms, figures, text, HParams
    for key, points in mine.items():
        assert [s for s, _ in points] == [s for s, _ in theirs[key]], key
        for (step, value), (_, expected) in zip(points, theirs[key], strict=True):
            if step == 0 and value is not None:
                assert value == pytest.approx(expected, nan_ok=True, **STEP0), key
    on_disk = json.loads((tmp_path / f"member{i}" / SUMMARY_FILE).read_text())
    assert on_disk["status"] == member["status"]


@pytest.mark.parametrize(
    "shared",
    [
        ("activation=sigmoid",),
        ("model=bn_mlp", "optimizer=adam"),  # BatchNorm statistics per member
        ("model=res_mlp", "activation=relu"),
    ],
    ids=["mlp", "bn_mlp_adam", "res_mlp"],
)
def test_members_equal_their_own_runs(tmp_path, shared):
    variants = [["seed=0"], ["seed=1", "optimizer.lr=0.05"], ["seed=2", "init=kaiming_normal"]]
    together, alone = population_and_runs(tmp_path, variants, *shared)
    for i, (member, own) in enumerate(zip(together, alone, strict=True)):
        assert member["status"] == COMPLETED
        assert_same_run(tmp_path, i, member, own)
    # The members did differ: their own seeds, learning rates and inits.
    assert len({m["grad_norms"]["first_step"]["layer_01"] for m in together}) == 3


def test_a_diverging_member_is_frozen_and_the_others_go_on(tmp_path):
    variants = [["seed=0"], ["seed=1", "optimizer.lr=5"], ["seed=2"]]
    together, alone = population_and_runs(tmp_path, variants, "activation=identity")
    assert [m["status"] for m in together] == [COMPLETED, DIVERGED, COMPLETED]
    assert "training diverged at step" in together[1]["error"]
    for i, (member, own) in enumerate(zip(together, alone, strict=True)):
        assert_same_run(tmp_path, i, member, own)


def test_a_rejected_member_leaves_nothing_and_the_others_train(tmp_path):
    members = [
        Member(compose_at(tmp_path, "ok", "seed=0"), tmp_path / "ok", ["seed=0"]),
        Member(compose_at(tmp_path, "bad", "optimizer.lr=-1"), tmp_path / "bad", []),
    ]
    ok, bad = train_population(members)
    assert ok["status"] == COMPLETED
    assert isinstance(bad, ConfigError) and str(bad).startswith("optimizer.lr=-1 is not allowed")
    assert not (tmp_path / "bad").exists()


def test_population_key_groups_what_can_stack(tmp_path):
    def key(*overrides: str) -> str:
        return population_key(compose_at(tmp_path, "k", *overrides))

    base = key("seed=0")
    assert key("seed=3", "optimizer.lr=0.5", "init=kaiming_normal", "init/bias=normal") == base
    assert key("model.width=64") != base
    assert key("optimizer=adam") != key("optimizer=sgd")
    assert key("activation=tanh") != base


def test_population_loader_gives_each_member_its_own_order():
    x, y = torch.arange(50.0).view(25, 2), torch.arange(25)
    seeds = [3, 4, 5]
    together = PopulationLoader(x, y, 8, seeds=seeds)
    alone = [PreloadedLoader(x, y, 8, shuffle=True, seed=s) for s in seeds]
    for _ in range(2):  # two epochs: each its own order
        batches = list(together)
        for m, loader in enumerate(alone):
            for (xb, yb), (xm, ym) in zip(batches, loader, strict=True):
                assert torch.equal(xb[m], xm) and torch.equal(yb[m], ym)


def test_memory_estimate_counts_parameters_state_and_activations():
    model = MLP("relu", depth=4, width=128, in_features=784, num_classes=10)
    params = sum(p.numel() for p in model.parameters())
    assert params == 784 * 128 + 128 + 3 * (128 * 128 + 128) + 128 * 10 + 10
    widths = 4 * 128 + 10
    sgd = estimate_bytes(model, members=8, batch=32, optimizer_states=0)
    assert sgd == 8 * (4 * params * 4 + 3 * 32 * widths * 4)
    adam = estimate_bytes(model, members=8, batch=32, optimizer_states=2)
    assert adam - sgd == 8 * 2 * params * 4
    assert split_sizes(10, 4) == [4, 3, 3]
    assert split_sizes(8, 8) == [8] and split_sizes(8, 100) == [8]
    assert split_sizes(5, 1) == [1] * 5


def test_a_population_continues_from_its_members_checkpoints(tmp_path):
    """A population stopped after epoch 1 and resumed to 3 ends exactly where one that ran
    straight through ends; a member's checkpoint also continues alone, as its own run's."""
    seeds = (["seed=0"], ["seed=1", "optimizer.lr=0.003"])
    shared = ("optimizer=adam", "model=bn_mlp")

    def members(name: str, *overrides: str) -> list[Member]:
        configs = [
            compose_at(tmp_path, f"{name}{i}", *s, *shared, *overrides) for i, s in enumerate(seeds)
        ]
        return [
            Member(c, tmp_path / f"{name}{i}", s)
            for i, (c, s) in enumerate(zip(configs, seeds, strict=True))
        ]

    straight = train_population(members("straight", "trainer.max_epochs=3"))
    first = train_population(members("resumed", "trainer.max_epochs=1"))
    assert [m["checkpoint"] for m in first] == [
        str(tmp_path / f"resumed{i}" / "checkpoints" / "last.ckpt") for i in range(2)
    ]
    aside = tmp_path / "epoch1.ckpt"  # member 1's, before the resume overwrites it
    aside.write_bytes(Path(first[1]["checkpoint"]).read_bytes())
    next_second()  # the resume's event files sort after the first call's
    resumed = train_population(
        members("resumed", "trainer.max_epochs=3", f"resume={tmp_path / 'resumed0'}")
    )
    for i, (done, expected) in enumerate(zip(resumed, straight, strict=True)):
        assert done["resumed_from"]["epochs"] == 1 and done["resumed_from"]["steps"] == 8
        # Bit-identical on CPU: the same weights, Adam state, BatchNorm state, batch order.
        assert done["metrics"] == expected["metrics"]
        assert (done["epochs"], done["steps"]) == (3, 24)
        assert done["verdict"]["labels"] == expected["verdict"]["labels"]
        shown, straight_shown = (
            tensorboard_scalars(tmp_path / f"resumed{i}"),
            tensorboard_scalars(tmp_path / f"straight{i}"),
        )
        for tag in ("train/loss", "val/acc", "val/acc_best", "grad_norm/layer_01"):
            assert [s for s, _ in shown[tag]] == [s for s, _ in straight_shown[tag]], tag

    # Member 1's epoch-1 checkpoint is its own run's: a run of its own continues it.
    alone_dir = tmp_path / "alone"
    cfg = compose_at(tmp_path, "alone", *seeds[1], *shared, "trainer.max_epochs=3")
    with open_dict(cfg):
        cfg.ckpt_path = str(aside)
    alone = run(cfg)
    assert alone["resumed_from"]["epochs"] == 1
    # Its record keeps the epoch it trained in a population (this call trained alone).
    assert "population" not in alone
    assert alone["populations"] == [
        {"members": 2, "position": 1, "run_dirs": ["resumed0", "resumed1"], "from_epoch": 0}
    ]
    assert [d["populations"] for d in resumed] == [d["populations"] for d in first]
    # Its own forward sums in another order than the stacked one: float32 ulps apart.
    for key, value in straight[1]["metrics"]["final"].items():
        assert alone["metrics"]["final"][key] == pytest.approx(value, rel=1e-5), key
    assert alone_dir.is_dir()


@pytest.mark.slow
@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_tutorial_members_end_where_their_own_runs_end(tmp_path, activation):
    """The tutorial's run (4x128, SGD 0.01, batch 32, 10 epochs, 4,000 images): each
    member's final val accuracy within 0.01 of its own run's, and the same verdict."""

    def tutorial(name: str, seed: int) -> DictConfig:
        with initialize_config_dir(str(config_dir()), version_base="1.3"):
            cfg = compose("train", overrides=[f"activation={activation}", f"seed={seed}",
                                              "data.download=false",
                                              "trainer.enable_progress_bar=false"])  # fmt: skip
        with open_dict(cfg):
            cfg.paths.log_dir = str(tmp_path / "logs")
            cfg.paths.output_dir = str(tmp_path / name)
        return cfg

    seeds = (42, 43, 44)
    together = train_population(
        [Member(tutorial(f"member{s}", s), tmp_path / f"member{s}", [f"seed={s}"]) for s in seeds]
    )
    for seed, member in zip(seeds, together, strict=True):
        alone = run(tutorial(f"alone{seed}", seed))
        assert member["epochs"] == alone["epochs"] == 10
        final, expected = member["metrics"]["final"], alone["metrics"]["final"]
        assert final["val/acc"] == pytest.approx(expected["val/acc"], abs=0.01)
        assert member["verdict"]["labels"] == alone["verdict"]["labels"]
        # The same labels in the same epochs (the evidence's numbers to float32 ulps).
        keys = ("phase", "labels", "label_epochs", "epochs", "steps")
        assert [{k: p.get(k) for k in keys} for p in member["verdict"]["timeline"]] == [
            {k: p.get(k) for k in keys} for p in alone["verdict"]["timeline"]
        ]


def test_a_population_too_big_for_its_device_is_split_and_says_so(tmp_path, monkeypatch):
    configs = [compose_at(tmp_path, f"m{s}", f"seed={s}") for s in range(3)]
    members = [Member(cfg, tmp_path / f"m{s}") for s, cfg in enumerate(configs)]
    with torch.device("meta"):
        one = estimate_bytes(MLP("relu", depth=4, width=32, in_features=784, num_classes=10),
                             members=1, batch=32, optimizer_states=0)  # fmt: skip
    # Room for two members (of the 80% a population may plan to use).
    monkeypatch.setattr(population, "free_bytes", lambda device: int(2.5 * one / 0.8))
    with warnings_logged() as warned:
        summaries = train_population(members)
    assert [s["status"] for s in summaries] == [COMPLETED] * 3
    assert [s["population"]["members"] for s in summaries] == [2, 2, 1]
    assert [s["population"]["position"] for s in summaries] == [0, 1, 0]
    said = "trained as 2 populations of 2, 1, one after another."
    assert any(w.startswith("A population of 3 needs about") and w.endswith(said) for w in warned)
