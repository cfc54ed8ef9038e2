"""Hydra/OmegaConf glue: the custom resolvers the configs use, and composing in-process."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from hydra.errors import HydraException
from omegaconf import OmegaConf

from gradflow.names import SWEEP_FILE

CONFIG_DIR_NAME = "conf"
SEED_KEY = "seed"
_claimed_dirs: dict[str, str] = {}


def project_root() -> Path:
    """The checkout holding conf/: $GRADFLOW_ROOT, else this package's source tree, else CWD."""
    if env := os.environ.get("GRADFLOW_ROOT"):
        return Path(env).resolve()
    source_root = Path(__file__).resolve().parents[2]  # src/gradflow/config.py -> checkout
    if (source_root / CONFIG_DIR_NAME / "train.yaml").is_file():
        return source_root
    return Path.cwd()


def config_dir() -> Path:
    """The `conf/` directory Hydra composes from."""
    return project_root() / CONFIG_DIR_NAME


def unique_dir(path: str) -> str:
    """`path`, or `path_2`, `path_3`, ... when another run already created it.

    The directory is created here (atomically, by mkdir) so two runs started in the same
    second cannot both claim it; the answer is memoised so re-resolving gives the same path.
    """
    if path in _claimed_dirs:
        return _claimed_dirs[path]
    candidate, n = path, 1
    while True:
        try:
            Path(candidate).mkdir(parents=True, exist_ok=False)
            break
        except FileExistsError:
            n += 1
            candidate = f"{path}_{n}"
    _claimed_dirs[path] = candidate
    return candidate


def dir_suffix(overrides: str) -> str:
    """'_<overrides>' made safe as one path component ('' without overrides)."""
    if not overrides:
        return ""
    return "_" + re.sub(r"[/\\\s]+", "-", overrides)[:180]


def sweep_subdir(sweep_dir: str, num: int, task: Sequence[str], override_dirname: str) -> str:
    """A sweep job's directory name: its number, padded to the sweep's size so the jobs sort
    in order, and the overrides that vary across the sweep, seed last, so a run's name in
    TensorBoard says what differs and a config's seeds sit side by side.

    The sweep is read from `<sweep_dir>/multirun.yaml`, which Hydra writes before the first
    job; without it (a sweeper that writes none, such as Optuna's) every override is named.
    """
    grid = sweep_grid(Path(sweep_dir) / SWEEP_FILE)
    if grid is None:
        return f"{num}{dir_suffix(override_dirname)}"
    varying, size = grid
    chosen = [o for o in task if override_key(o) in varying]
    chosen.sort(key=lambda o: override_key(o) == SEED_KEY)  # stable: the others keep their order
    width = len(str(size - 1)) if size else 1
    return f"{num:0{width}d}{dir_suffix(','.join(chosen))}"


def sweep_grid(multirun_file: Path) -> tuple[set[str], int | None] | None:
    """(the keys a sweep varies, its number of jobs or None when not countable), from the
    sweep's multirun.yaml: its command line and its sweeper's params; None without one."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if not multirun_file.is_file():
        return None
    hydra = OmegaConf.to_container(OmegaConf.load(multirun_file).hydra, resolve=False)
    params = hydra.get("sweeper", {}).get("params") or {}
    by_key = {key: f"{key}={value}" for key, value in params.items()}
    by_key.update({override_key(o): o for o in hydra["overrides"]["task"]})  # the CLI wins
    varying, size = set(), 1
    for override in OverridesParser.create().parse_overrides(list(by_key.values())):
        if not override.is_sweep_override():
            continue
        try:
            count = len(list(override.sweep_string_iterator()))
        except HydraException:  # a search space (an interval), not a list of values
            count, size = 2, None
        if count > 1:
            varying.add(override.key_or_group)
            size = size * count if size is not None else None
    return varying, size


def override_key(override: str) -> str:
    """The key a Hydra override sets: 'model.depth' for 'model.depth=3', '++resume=x', '~x'."""
    return override.split("=", 1)[0].lstrip("+~")


def hydra_quote(value: str | Path) -> str:
    """A value as a quoted Hydra override string: commas, '=' and spaces stay literal."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


# What Hydra's override parser splits an unquoted value on (a sweep's ',', a second '=').
_SPLIT_CHARS = re.compile(r"[=,\s]")


def quote_paths(argv: Sequence[str]) -> list[str]:
    """The command line with each override whose value is an existing file or directory
    holding '=', ',' or a space quoted for Hydra, so that `ckpt_path=<a run's checkpoint>`
    works as printed (run directories are named after their overrides)."""
    quoted = [argv[0]]
    for arg in argv[1:]:
        key, sep, value = arg.partition("=")
        plain = sep and not arg.startswith("-") and value[:1] not in ("'", '"')
        if plain and _SPLIT_CHARS.search(value) and Path(value).expanduser().exists():
            arg = f"{key}={hydra_quote(value)}"
        quoted.append(arg)
    return quoted


def write_text_atomic(path: Path, text: str) -> None:
    """Write to a temporary file and rename it, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def register_resolvers() -> None:
    """Register gradflow's resolvers once (safe to call again)."""
    resolvers = {
        "project_root": lambda: str(project_root()),
        "unique_dir": unique_dir,
        "dir_suffix": dir_suffix,
        "sweep_subdir": sweep_subdir,
    }
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn, use_cache=name == "unique_dir")


register_resolvers()
