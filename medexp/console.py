"""What a medexp command shows on the console: the run's config choices, and the switch that brings the
libraries' own chatter back (the end-of-run summary is medexp.tracking.summary).

Library noise a user cannot act on (progress bars of tiny loads, INFO lines, deprecation warnings raised inside
transformers/peft) is silenced where medexp calls that library, through the helpers here, and only while
`verbose()` is false. Hydra's verbose flag turns them all back on: `hydra.verbose=true` (every logger at DEBUG)
or `hydra.verbose=medexp` (medexp's loggers only) makes `verbose()` true, so the libraries' logs, warnings and
bars come back and the training progress bar logs each Trainer log at DEBUG as well.

Imports nothing heavy and nothing of medexp, so any module may use it.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)


def verbose() -> bool:
    """True under `hydra.verbose=true` or `hydra.verbose=medexp`: show the libraries' logs, warnings and bars."""
    return logging.getLogger("medexp").isEnabledFor(logging.DEBUG)


@contextmanager
def library_bars_off() -> Iterator[None]:
    """Inside the block, no progress bars from transformers (model loading) or datasets (map, filter), unless
    verbose(); each library's previous setting is restored afterwards."""
    if verbose():
        yield
        return
    import datasets
    from transformers.utils import logging as hf_logging

    hf_was, ds_was = hf_logging.is_progress_bar_enabled(), datasets.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if hf_was:
            hf_logging.enable_progress_bar()
        if ds_was:
            datasets.enable_progress_bars()


class _DropMessages(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def drop_log_messages(logger_name: str, prefix: str) -> None:
    """Drop the records of one library logger whose message starts with `prefix` (once per process), unless
    verbose(); the logger's other records are untouched."""
    if verbose():
        return
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, _DropMessages) and f.prefix == prefix for f in logger.filters):
        logger.addFilter(_DropMessages(prefix))


def quiet_logger(name: str, level: int = logging.WARNING) -> None:
    """Raise one library logger to `level` (its INFO lines say nothing a user can act on), unless verbose()."""
    if not verbose():
        logging.getLogger(name).setLevel(level)


def redirect_console_logging() -> contextlib.AbstractContextManager:
    """Console log lines written above an open tqdm bar instead of through it; files are untouched. A no-op where
    the root logger has no console handler (tqdm would otherwise add one)."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    console = [
        h
        for h in logging.root.handlers
        if isinstance(h, logging.StreamHandler) and h.stream in (sys.stdout, sys.stderr)
    ]
    return logging_redirect_tqdm() if console else contextlib.nullcontext()


# --- the run's first line -----------------------------------------------------------------------------------

_announced: set[str] = set()


def announce_choices() -> None:
    """Log the run's config choices once per Hydra job, e.g. `medexp: model=tiny dataset=sample ...`."""
    line = choices_line()
    if line is None:
        return
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    hydra_cfg = HydraConfig.get()  # a job's output dir; a config composed in-process (tests) has none
    job = OmegaConf.select(hydra_cfg, "runtime.output_dir", default=None) or str(id(hydra_cfg))
    if job not in _announced:
        _announced.add(job)
        log.info("%s", line)


def choices_line() -> str | None:
    """The option picked for each config group, in the defaults list's order; None outside a Hydra run."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    choices = HydraConfig.get().runtime.choices
    picked = [
        f"{group}={option}"
        for group, option in reversed(list(choices.items()))
        if option is not None
        and not group.startswith("hydra/")
        and not (group == "paths" and option == "default")  # where files go: shown in the summary
    ]
    return "medexp: " + " ".join(picked)
