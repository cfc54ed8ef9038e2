"""A Population of M members equals M separate models: outputs, gradients, BatchNorm
state and SGD steps with a learning rate per member, for every model family and block form."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from gradflow.errors import ConfigError
from gradflow.nn import BNMLP, MLP, Population, ResMLP, TrackedModel

SEEDS = (0, 1, 2)
IN, OUT, BATCH = 20, 5, 16
# float32: bmm and batch_norm over side-by-side channels may sum in another order than a
# member's own addmm and batch_norm; outputs are O(1), so 1e-6 is a few ulps near zero.
TOL = {"rtol": 1e-5, "atol": 1e-6}
SMALL = {"in_features": IN, "num_classes": OUT, "width": 24}

FAMILIES: dict[str, Callable[[], TrackedModel]] = {
    "mlp": lambda: MLP("sigmoid", depth=3, **SMALL),
    "bn_mlp_before": lambda: BNMLP("relu", depth=3, bn_position="before", **SMALL),
    "bn_mlp_after": lambda: BNMLP("tanh", depth=3, bn_position="after", bn_momentum=0.3, **SMALL),
}
for _block in ("post", "identity", "preact"):
    for _branch in ("default", "zero", "rezero"):
        if (_block, _branch) != ("identity", "zero"):  # ResMLP refuses that pair
            # depth 4: the projection, a block of two Linear layers and one of one
            FAMILIES[f"res_{_block}_{_branch}"] = lambda b=_block, i=_branch: ResMLP(
                "tanh", depth=4, block=b, branch_init=i, **SMALL
            )


def members(kind: str) -> list[TrackedModel]:
    """One member per seed, each built as its separate run would build it."""
    built = []
    for seed in SEEDS:
        torch.manual_seed(seed)
        built.append(FAMILIES[kind]())
    return built


def batches(step: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, B, IN) inputs and (M, B) targets: each member its own batch."""
    g = torch.Generator().manual_seed(100 + step)
    x = torch.randn(len(SEEDS), BATCH, IN, generator=g)
    return x, torch.randint(0, OUT, (len(SEEDS), BATCH), generator=g)


def population_loss(population: Population, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The sum of the members' mean losses: member m's gradient is that of its own loss."""
    logits = population(x)
    per_sample = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
    return per_sample.view(y.shape).mean(1).sum()


@pytest.mark.parametrize("kind", FAMILIES)
def test_outputs_and_gradients_equal_each_members_own(kind):
    population = Population(members(kind))
    alone = copy.deepcopy(list(population.members))
    x, y = batches()
    loss = population_loss(population, x, y)
    loss.backward()
    logits = population(x.clone()).detach()
    for m, model in enumerate(alone):
        own = model(x[m])
        torch.testing.assert_close(logits[m], own.detach(), **TOL)
        F.cross_entropy(own, y[m]).backward()
        grads = dict(population.members[m].named_parameters())
        for name, p in model.named_parameters():
            torch.testing.assert_close(grads[name].grad, p.grad, **TOL, msg=f"{kind} {m} {name}")


@pytest.mark.parametrize("kind", [k for k in FAMILIES if k.startswith(("bn", "res_preact"))])
def test_batchnorm_state_per_member_and_eval_outputs(kind):
    population = Population(members(kind))
    alone = copy.deepcopy(list(population.members))
    x, _ = batches()
    population(x)
    for m, model in enumerate(alone):
        model(x[m])
        ours = dict(population.members[m].named_buffers())
        buffers = dict(model.named_buffers())
        assert buffers, "a BatchNorm model has running stats"
        for name, buffer in buffers.items():
            torch.testing.assert_close(ours[name], buffer, **TOL, msg=f"{kind} {m} {name}")
    # The members' stats differ (own batches, own weights), so eval mode uses each one's own.
    means = [next(b for n, b in mm.named_buffers() if "running_mean" in n) for mm in alone]
    assert (means[0] - means[1]).abs().max() > 1e-3
    population.eval()
    x_eval, _ = batches(step=1)
    with torch.no_grad():
        logits = population(x_eval)
        for m, model in enumerate(alone):
            torch.testing.assert_close(logits[m], model.eval()(x_eval[m]), **TOL)


# Adam leaves out preact: there the biases that feed straight into a BatchNorm have a zero
# gradient up to float32 noise (~1e-8), which Adam scales up to lr-sized steps of random
# sign, so any change of summation order (a thread count, a device, this stacking) moves
# them apart by ~lr (the BatchNorm after them removes them from the outputs in train mode).
OPTIMIZERS = {
    "sgd": (torch.optim.SGD, (0.3, 0.1, 0.03)),
    "adam": (torch.optim.Adam, (3e-3, 1e-3, 3e-4)),
}


@pytest.mark.parametrize(
    ("kind", "optimizer_name"),
    [
        *(
            (k, o)
            for k in ("mlp", "bn_mlp_before", "res_post_rezero", "res_post_zero")
            for o in OPTIMIZERS
        ),
        ("res_preact_zero", "sgd"),
    ],
)
def test_a_learning_rate_per_member_follows_each_members_own_training(kind, optimizer_name):
    optimizer_class, lrs = OPTIMIZERS[optimizer_name]
    population = Population(members(kind))
    alone = copy.deepcopy(list(population.members))
    groups = [
        {"params": m.parameters(), "lr": lr} for m, lr in zip(population.members, lrs, strict=True)
    ]
    optimizer = optimizer_class(groups)
    own = [optimizer_class(model.parameters(), lr=lr) for model, lr in zip(alone, lrs, strict=True)]
    start = [p.detach().clone() for p in population.members[2].parameters()]
    for step in range(5):
        x, y = batches(step)
        optimizer.zero_grad()
        population_loss(population, x, y).backward()
        optimizer.step()
        for m, (model, opt) in enumerate(zip(alone, own, strict=True)):
            opt.zero_grad()
            F.cross_entropy(model(x[m]), y[m]).backward()
            opt.step()
    moved = max(
        (p - s).abs().max() for p, s in zip(population.members[2].parameters(), start, strict=True)
    )
    assert moved > 1e-3, "the smallest learning rate still trains"
    for m, model in enumerate(alone):
        ours = dict(population.members[m].named_parameters())
        for name, p in model.named_parameters():
            torch.testing.assert_close(ours[name], p, rtol=1e-5, atol=1e-6, msg=f"{m} {name}")
        for name, buffer in model.named_buffers():
            theirs = dict(population.members[m].named_buffers())[name]
            torch.testing.assert_close(theirs, buffer, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("odd_one", "message"),
    [
        (
            lambda: MLP("relu", depth=3, **SMALL),
            r"^members\[2\]\.activation='relu' is not allowed: a population's members must "
            r"share member 0's architecture \(activation='sigmoid'\)\.$",
        ),
        (
            lambda: MLP("sigmoid", depth=3, **{**SMALL, "width": 32}),
            r"^members\[2\]\.hidden\.0\.linear\.weight=\(32, 20\) is not allowed: .*"
            r"\(hidden\.0\.linear\.weight=\(24, 20\)\)\.$",
        ),
        (lambda: MLP("sigmoid", depth=4, **SMALL), r"^members\[2\]\.hidden\.3\.linear\.weight="),
        (lambda: BNMLP("sigmoid", depth=3, **SMALL), r"^members\[2\]\.class='BNMLP'"),
        (lambda: torch.nn.Linear(IN, OUT), r"stacks gradflow's MLP, BNMLP and ResMLP only\.$"),
    ],
)
def test_members_of_another_architecture_fail_with_one_sentence(odd_one, message):
    first_two = members("mlp")[:2]
    with pytest.raises(ConfigError, match=message):
        Population([*first_two, odd_one()])


def test_residual_block_forms_are_told_apart():
    post, preact = FAMILIES["res_post_default"](), FAMILIES["res_preact_default"]()
    with pytest.raises(ConfigError, match=r"^members\[1\]\.block='preact' is not allowed"):
        Population([post, preact])
    rezero = FAMILIES["res_post_rezero"]()
    with pytest.raises(ConfigError, match=r"^members\[1\]\.branch_init='rezero'"):
        Population([post, rezero])


def test_an_empty_population_fails_with_one_sentence():
    with pytest.raises(ConfigError, match=r"^members=\[\] is not allowed: a population needs at"):
        Population([])
