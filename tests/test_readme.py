"""Every `python scripts/train.py` and `scripts/probe.py` command README prints composes.

Each command is composed with Hydra's compose API (a sweep by its first value) and passes
the pre-flight checks, without training: a renamed key, group or option fails here.
Commands with placeholders (`<date>`, `<partition>`) are left out.
"""

from __future__ import annotations

import re
import shlex

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from gradflow.config import config_dir
from gradflow.training import preflight
from tests.helpers import REPO_ROOT

SCRIPTS = {"train": "train", "probe": "probe"}  # script -> its config


def readme_commands() -> list[tuple[str, list[str]]]:
    """(config name, arguments) of each README command line of train.py or probe.py."""
    text = (REPO_ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            match = re.search(r"python scripts/(\w+)\.py(.*)", line.split("  #")[0])
            if match and match.group(1) in SCRIPTS and "<" not in line:
                commands.append((SCRIPTS[match.group(1)], shlex.split(match.group(2))))
    return commands


def first_of_each_sweep(arguments: list[str]) -> list[str]:
    """The overrides of a command's first job: `a=1,2` as `a=1`; `-m` and Hydra's flags
    (with the value of `--cfg`) dropped."""
    valued = {i + 1 for i, a in enumerate(arguments) if a in ("--cfg", "-c")}
    overrides = [a for i, a in enumerate(arguments) if not a.startswith("-") and i not in valued]
    parsed = OverridesParser.create().parse_overrides(overrides)
    return [
        f"{o.get_key_element()}={next(o.sweep_string_iterator())}" if o.is_sweep_override()
        else o.input_line
        for o in parsed
    ]  # fmt: skip


COMMANDS = readme_commands()


def test_readme_has_the_commands_this_test_checks():
    assert len(COMMANDS) >= 15
    assert ("train", ["-m", "experiment=nielsen2015"]) in COMMANDS


@pytest.mark.parametrize(("config", "arguments"), COMMANDS, ids=[" ".join(a) for _, a in COMMANDS])
def test_readme_command_composes(config, arguments):
    overrides = first_of_each_sweep(arguments)
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose(config, overrides=overrides, return_hydra_config=True)
    if config == "train":
        preflight.check(cfg)
