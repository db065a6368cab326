"""`command("<name>")`: the decorator every medexp command uses instead of `hydra.main`, and the one exit path.

It registers the schemas and resolvers, composes `conf/<name>.yaml` against the typed schema, and turns a
UserError, or a config error from Hydra or OmegaConf (unknown key, wrong type, unknown option), into
`medexp: error: <paragraph>` on stderr and exit status 2, with no traceback. Ctrl-C / SIGTERM end in one line and
exit 128 + the signal. Inside a multirun a UserError is re-raised, so the sweeper records the trial as failed
and goes on.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any

from medexp.config.errors import Stopped, UserError, describe_config_error, exit_with
from medexp.config.runtime import discard_run_dir, in_multirun


def command(config_name: str) -> Callable[[Callable[[Any], Any]], Callable[[], Any]]:
    """`hydra.main` for medexp's commands, plus the one exit path for bad input."""

    def decorate(task: Callable[[Any], Any]) -> Callable[[], Any]:
        import hydra

        started: list[bool] = []  # set once Hydra hands the composed config to the task
        existing: set[str] = set()  # what the launch directory held before Hydra made the run's folder

        @functools.wraps(task)
        def job(cfg: Any) -> Any:
            started.append(True)
            return _run_job(task, cfg, existing)

        hydra_main = hydra.main(version_base="1.3", config_path="pkg://medexp.conf", config_name=config_name)(
            job
        )

        @functools.wraps(task)
        def main() -> Any:
            started.clear()  # a second call in one process (notebooks, tests) starts afresh
            existing.clear()
            existing.update(os.listdir("."))
            return _compose_and_run(hydra_main, started)

        return main

    return decorate


def _run_job(task: Callable[[Any], Any], cfg: Any, existing: set[str]) -> Any:
    """The command's own work on the composed config; bad input ends in one paragraph and no run folder."""
    try:
        return task(cfg)
    except UserError as err:
        if in_multirun():
            raise
        discard_run_dir(cfg, existing)
        exit_with(err)
    except KeyboardInterrupt as err:  # Ctrl-C / SIGTERM: one line, the run's status already says KILLED
        if in_multirun():
            raise
        _stopped(err, cfg)
    except _interpolation_errors() as err:
        if in_multirun():
            raise
        discard_run_dir(cfg, existing)
        exit_with(UserError(describe_config_error(err)))


def _compose_and_run(hydra_main: Callable[[], Any], started: list[bool]) -> Any:
    """Hydra's composition and launch, with its config errors (not the command's own bugs) as one paragraph."""
    from medexp.config.commands import register_configs
    from medexp.config.resolvers import register_resolvers

    register_configs()
    register_resolvers()
    # Hydra prints its own multi-line report of config errors unless asked to raise them; medexp raises them
    # here and prints one paragraph instead.
    full_error = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        return hydra_main()
    except KeyboardInterrupt as err:  # in a sweep: the trial's run already ended KILLED
        _stopped(err, None)
    except _config_errors() as err:
        if started:  # raised by the command's own code, not by composing the config: a bug to see
            raise
        exit_with(UserError(describe_config_error(err)))
    except OSError as err:
        if started:
            raise
        exit_with(  # Hydra making the run's folder (hydra.run.dir, under paths.output_root)
            UserError(
                f"Could not create the run's folder {err.filename}: {err.strerror}. Set paths.output_root "
                "(or hydra.run.dir) to a folder you can write to, e.g. paths.output_root=outputs."
            )
        )
    finally:
        if full_error is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)


def _stopped(err: KeyboardInterrupt, cfg: Any) -> None:
    """Ctrl-C / SIGTERM: one line (with the resume command when a checkpoint was saved), exit 128 + signal."""
    import signal

    signum = err.signum if isinstance(err, Stopped) else int(signal.SIGINT)
    what = str(err) or "interrupted"
    run = None
    if cfg is not None:  # a resume's own run, not the resuming command's new folder (only train has resume)
        run = cfg.get("resume") or cfg.paths.output_dir
    hint = (
        f" Continue it with: python -m medexp.train resume={run}" if isinstance(err, Stopped) and run else ""
    )
    print(f"medexp: stopped: {what}.{hint}", file=sys.stderr)
    sys.exit(128 + signum)


def _config_errors() -> tuple[type[BaseException], ...]:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    return (HydraException, OmegaConfBaseException)


def _interpolation_errors() -> tuple[type[BaseException], ...]:
    from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

    return (InterpolationResolutionError, MissingMandatoryValue)
