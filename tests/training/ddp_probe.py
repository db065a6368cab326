"""`python -m medexp.train` as torchrun starts it on each rank, recording which training rows that rank's batches
held (one hash per row, in $MEDEXP_PROBE_DIR/rank<RANK>.txt), for tests/training/test_distributed.py."""

from __future__ import annotations

import hashlib
import os
import runpy
import sys
from pathlib import Path

from medexp.training import cost

seen = Path(os.environ["MEDEXP_PROBE_DIR"]) / f"rank{os.environ['RANK']}.txt"
collate = cost.BatchCounter.__call__


def recording(self, examples):
    if self.active:  # training batches only, not evaluation ones
        with seen.open("a") as out:
            for example in examples:
                out.write(hashlib.sha1(str(list(example["input_ids"])).encode()).hexdigest() + "\n")
    return collate(self, examples)


cost.BatchCounter.__call__ = recording
sys.argv = ["medexp.train", *sys.argv[1:]]
runpy.run_module("medexp.train", run_name="__main__", alter_sys=True)
