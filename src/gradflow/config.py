"""Hydra/OmegaConf glue: the custom resolvers the configs use, and composing in-process."""

from __future__ import annotations

import os
import re
from pathlib import Path

from omegaconf import OmegaConf

CONFIG_DIR_NAME = "conf"
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


def override_key(override: str) -> str:
    """The key a Hydra override sets: 'model.depth' for 'model.depth=3', '++resume=x', '~x'."""
    return override.split("=", 1)[0].lstrip("+~")


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
    }
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn, use_cache=name == "unique_dir")


register_resolvers()
