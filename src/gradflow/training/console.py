"""What a run prints: each line once, in plain sentences, and the same lines in its log file.

Hydra configures logging for every job (conf/hydra/job_logging/gradflow.yaml): the root
logger writes to the console (INFO to stdout as it is, warnings and errors to stderr as
`warning: ...`/`error: ...`) and to `<run dir>/train.log` with times and logger names.
gradflow's own messages (the data source, the summary, an error) go through `log`;
`quiet()` then makes the third-party ones fit that picture:

- Lightning's top-level package gives its logger a console handler of its own, so with a
  configured root logger every Lightning line would print twice; with one, that handler
  goes and the lines reach the root's handlers (console and train.log) once, which is
  what `lightning.pytorch` itself does in that case.
- Python warnings go through logging (`logging.captureWarnings`), so the log file holds
  them too.
- Messages no gradflow user can act on are filtered where they are issued:
  `UNACTIONABLE_WARNINGS` and `UNACTIONABLE_LOGS`.
"""

from __future__ import annotations

import logging
import warnings

log = logging.getLogger("gradflow")

# (message regex, issuing module regex) of warnings about the libraries' own internals or
# of advice that does not apply to a gradflow run.
UNACTIONABLE_WARNINGS = (
    # torch deprecates a name Lightning's pytree helpers still use.
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", r"lightning\..*"),
    # On a machine with SLURM's tools, Lightning suggests srun for a local run; the slurm
    # launcher (conf/hydra/launcher/slurm.yaml) runs jobs under srun itself.
    (r"The `srun` command is available on your system but is not used", r"lightning\..*"),
    # A resumed run writes its checkpoint where it was: the directory holds the last one.
    (r"Checkpoint directory .* exists and is not empty", r"lightning\..*"),
    # About Lightning's own per-step logging, which gradflow does not use: its monitors log
    # at step 0 and every log_every_n_steps across epochs, and every epoch ends with its
    # metrics whatever the interval.
    (
        r"The number of training batches \(\d+\) is smaller than the logging interval",
        r"lightning\..*",
    ),
)
# Logger name: the starts of its messages that advertise, report hardware the run could
# not use anyway, repeat what gradflow's own status line says (why the fit stopped: its
# epochs), or (submitit's, in a SLURM task) say a SIGTERM is ignored when Lightning stops
# the run on it and records it as terminated.
UNACTIONABLE_LOGS = {
    "lightning.pytorch.utilities.rank_zero": (
        "💡 Tip:",
        "TPU available: False",
        "`Trainer.fit` stopped:",
    ),
    "submitit": ("Bypassing signal",),
}


class _DropMessages(logging.Filter):
    def __init__(self, starts: tuple[str, ...]) -> None:
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.starts)


class ConsoleFormatter(logging.Formatter):
    """The message alone; `warning: ` or `error: ` before it from WARNING up."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno >= logging.ERROR:
            return f"error: {text}"
        if record.levelno >= logging.WARNING:
            return f"warning: {text}"
        return text


_shown: set[str] = set()  # the warnings this process's console has shown


class ShownOnce(logging.Filter):
    """Lets through a warning the console has not shown yet in this process: the jobs of an
    in-process sweep each log their data source to their own train.log, the console says
    it once."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.levelno >= logging.ERROR or message not in _shown:
            _shown.add(message)
            return True
        return False


class BelowWarning(logging.Filter):
    """Lets through what the stdout handler prints: records below WARNING."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING


def quiet() -> None:
    """Route third-party messages as the module docstring says (idempotent)."""
    for message, module in UNACTIONABLE_WARNINGS:
        warnings.filterwarnings("ignore", message=message, module=module)
    for name, starts in UNACTIONABLE_LOGS.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(starts))
    if logging.getLogger().handlers:  # logging is configured (by Hydra): print once, there
        lightning = logging.getLogger("lightning")
        for handler in list(lightning.handlers):
            lightning.removeHandler(handler)
        logging.captureWarnings(True)
