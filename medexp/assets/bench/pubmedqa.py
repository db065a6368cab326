"""Helpers for medexp's PubMedQA task (pubmedqa.yaml beside this file), loaded by lm-evaluation-harness."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TEST_SET = Path(__file__).with_name("pubmedqa_test_set.json")


def test_ids() -> set[str]:
    """The PubMed ids of PQA-L's official 500-question test set."""
    return set(json.loads(TEST_SET.read_text())["test"])


def test_set(dataset: Any) -> Any:
    """The official test questions out of qiaojin/PubMedQA's single pqa_labeled split."""
    ids = test_ids()
    return dataset.filter(lambda doc: str(doc["pubid"]) in ids)


def doc_to_text(doc: dict) -> str:
    """The prompt lm-eval's own pubmedqa task builds: the abstract's paragraphs, the question, "Answer:"."""
    contexts = "\n".join(doc["context"]["contexts"])
    return f"Abstract: {contexts}\nQuestion: {doc['question']}\nAnswer:"
