"""Stage kinds and data formats are plug-ins: a kind or a reader defined here, registered, is trained on and read
through medexp's own entry points without any edit to medexp; unknown names are refused in one paragraph."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medexp.config import UserError
from medexp.data import QAPair, RawRecords, Reader, register_reader
from medexp.training.methods import KINDS, StageKind, register
from tests.helpers import compose_config, config_error


class AllTokens(StageKind):
    """SFT with the loss on every token of the conversation, the question's too ("instruction modelling"):
    medexp's SFT trainer on a mask of ones."""

    name = "all_tokens"
    records = (QAPair,)  # question-answer pairs of any format
    logs = ("loss", "eval_loss")

    def __init__(self) -> None:
        self.masks: list[list[int]] = []
        self.trainers = 0

    def prepare(self, raw, dataset_cfg, tokenizer, seed, mixture):
        import datasets

        data = super().prepare(raw, dataset_cfg, tokenizer, seed, mixture)
        for split in ("train", "validation"):
            ids = getattr(data, split)["input_ids"]
            ones = [[1] * len(row) for row in ids]
            setattr(data, split, datasets.Dataset.from_dict({"input_ids": ids, "completion_mask": ones}))
        self.masks = data.train["completion_mask"]
        return data

    def build_trainer(self, cfg, model, tokenizer, data, output_dir, precision, callbacks):
        from medexp.training.trainer import build_trainer

        self.trainers += 1
        return build_trainer(cfg, model, tokenizer, data, output_dir, precision, callbacks)


@pytest.fixture
def all_tokens():
    kind = register(AllTokens())
    yield kind
    KINDS.pop(kind.name)


def test_a_stage_kind_defined_in_a_test_trains_end_to_end(tmp_path, all_tokens):
    import mlflow

    from medexp.train import train

    cfg = compose_config(
        [
            "experiment=smoke",
            "+dataset@stages.whole.dataset=sample",
            f"+stages.whole.kind={all_tokens.name}",
            "eval=none",
            "eval.metrics=[loss]",
            "trainer.max_steps=4",
            "trainer.eval_steps=2",
            "trainer.logging_steps=1",
        ],
        tmp_path,
    )
    result = train(cfg)
    assert all_tokens.trainers == 1
    assert all_tokens.masks and all(set(mask) == {1} for mask in all_tokens.masks)  # its own preparation
    client = mlflow.MlflowClient(str(cfg.tracking.uri))
    (child,) = client.search_runs(
        [client.get_run(result.run_id).info.experiment_id], f"tags.mlflow.parentRunId = '{result.run_id}'"
    )
    assert child.data.tags["medexp.stage_kind"] == "all_tokens"
    losses = client.get_metric_history(child.info.run_id, "train_loss")
    assert sorted(m.step for m in losses) == [1, 2, 3, 4]  # real optimizer steps on the tiny model
    curve = sorted(client.get_metric_history(child.info.run_id, "eval_loss"), key=lambda m: m.step)
    assert curve[0].step == 0 and curve[-1].step == 4 and curve[-1].value < curve[0].value
    assert "eval/loss" in child.data.metrics  # the kind asks for held-out perplexity (the default)
    assert (result.output_dir / "stages" / "whole" / "adapter" / "adapter_config.json").is_file()


def test_a_kind_that_does_not_take_the_data_is_refused(tmp_path, all_tokens):
    message = config_error(
        [
            "experiment=smoke",
            "+dataset@stages.a.dataset=safety_preference",
            f"+stages.a.kind={all_tokens.name}",
        ],
        tmp_path,
    )
    assert (
        "stages.a.kind=all_tokens needs dataset.kind=qa or dataset.kind=multiple_choice or "
        "dataset.kind=conversation, but its dataset has kind preference"
    ) in message


def test_an_unknown_stage_kind_is_one_paragraph(tmp_path):
    message = config_error(["experiment=sft_then_dpo_smoke", "stages.dpo.kind=dop"], tmp_path)
    assert message.startswith("stages.dpo.kind=dop is not a stage kind. Did you mean dpo?")
    assert f"Known: {', '.join(KINDS)}." in message  # every registered kind, in order
    assert "Known: sft, pretrain, dpo, kto, orpo, simpo, grpo." in message


def _read_tsv(dataset_cfg, key: str) -> RawRecords:
    lines = Path(str(dataset_cfg.path)).read_text().splitlines()
    rows = [line.split("\t") for line in lines[1:]]
    return RawRecords([QAPair(q, a) for q, a in rows], rows_in=len(rows), columns=("q", "a"))


def test_a_data_format_defined_in_a_test_is_read_and_prepared(tmp_path, tiny_tokenizer):
    from medexp.data import load_pairs, prepare_data
    from medexp.data.pairs import prepare_pairs

    register_reader(
        Reader(
            kind="tsv",
            record=QAPair,  # question-answer pairs: sft stages train on it by default
            read=_read_tsv,
            prepare=prepare_pairs,
            describe="tab-separated pairs",
            mixable=True,
            suffixes=(".tsv",),
        )
    )
    try:
        path = tmp_path / "pairs.tsv"
        path.write_text("q\ta\n" + "".join(f"What is {i}?\tIt is {i}.\n" for i in range(6)))
        cfg = compose_config(
            ["experiment=smoke", "dataset=file", f"dataset.path={path}", "dataset.kind=tsv"], tmp_path
        )
        assert (
            config_error(
                ["experiment=smoke", "dataset=file", f"dataset.path={path}", "dataset.kind=tsv"], tmp_path
            )
            == ""
        )
        data = prepare_data(load_pairs(cfg.dataset), cfg.dataset, tiny_tokenizer, seed=0)
        assert data.rows_kept == 6 and data.train.column_names == ["input_ids", "completion_mask"]
        # a file of another type is refused by the reader's suffixes, before anything is read
        other = tmp_path / "pairs.jsonl"
        other.write_text(json.dumps({"q": "x", "a": "y"}) + "\n")
        with pytest.raises(UserError, match=r"cannot read as dataset.kind=tsv\. Use one of \.tsv"):
            load_pairs(
                compose_config(
                    ["experiment=smoke", f"dataset.path={other}", "dataset.kind=tsv"], tmp_path
                ).dataset
            )
    finally:
        from medexp.data.readers import READERS

        READERS.pop("tsv")
