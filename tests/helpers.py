"""Helpers shared by the tests: configs composed in-process, the CLI as a user runs it, asset paths."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from omegaconf import DictConfig

import medexp  # noqa: F401  (registers the ${medexp_assets:} resolver)
from medexp.config import assets_dir
from medexp.config.compose import compose_run_config

# Tests never reach the network: any hub access fails fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TINY_MODEL = Path(assets_dir()) / "tiny_llama"
SAMPLE = Path(assets_dir()) / "sample" / "medquad_sample.jsonl"
SAFETY = Path(assets_dir()) / "safety" / "safety_sft.jsonl"


def compose_config(overrides: list[str], tmp_path: Path) -> DictConfig:
    """The config `python -m medexp.train *overrides` would run, writing only under tmp_path."""
    return compose_run_config(overrides, tmp_path)


def run_cli(
    args: list[str], cwd: Path, timeout: float = 180, prelude: str = ""
) -> subprocess.CompletedProcess:
    """`python -m medexp.train *args` in cwd, as a user would type it. `prelude` runs first in the process."""
    code = f"{prelude}\nimport runpy, sys\nsys.argv = ['medexp.train', *sys.argv[1:]]\n"
    code += "runpy.run_module('medexp.train', run_name='__main__', alter_sys=True)"
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def config_error(overrides: list[str], tmp_path: Path) -> str:
    """The one paragraph `python -m medexp.train *overrides` would refuse with: from composing the config
    (unknown key, wrong type), from validating it (ranges, cross-field rules) or from the readers' and stage
    kinds' checks (a kind against its data); "" if it is accepted."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from medexp.config import UserError, describe_config_error, validate

    try:
        cfg = compose_config(overrides, tmp_path)
    except (HydraException, OmegaConfBaseException) as err:
        return describe_config_error(err)
    from medexp.training.methods import check_stages

    try:
        validate(cfg)
        check_stages(cfg)  # every source's reader and every stage's kind, as train() checks right after
    except UserError as err:
        return str(err)
    return ""


class MlflowServer:
    """A real `mlflow server` on 127.0.0.1 (its own SQLite store, proxied artifacts), which a test can kill and
    start again on the same port and store."""

    def __init__(self, root: Path) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.root = root
        self.url = f"http://127.0.0.1:{self.port}"
        self.artifacts = root / "artifacts"
        self.proc: subprocess.Popen | None = None
        root.mkdir(parents=True, exist_ok=True)

    def start(self) -> MlflowServer:
        import time
        import urllib.request

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", "1", "--backend-store-uri", f"sqlite:///{self.root}/mlflow.db",
             "--artifacts-destination", str(self.artifacts)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"mlflow server did not start: {self.proc.stderr.read()[-2000:]}")
            time.sleep(0.3)

    def kill(self) -> None:
        """Gone at once, as a crashed server or a lost machine is (its whole process group: uvicorn workers too)."""
        import os
        import signal

        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
