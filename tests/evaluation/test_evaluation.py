"""Evaluation: each metric on known inputs, multiple-choice scoring against a direct computation, the eval
options, the judge through a real local HTTP endpoint, and `python -m medexp.evaluate` on a finished run."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from omegaconf import OmegaConf

from medexp.evaluation.generation import Generation, speed_metrics
from medexp.evaluation.multiple_choice import ChoiceItem, accuracy, candidate_logprobs, choice_item
from medexp.evaluation.runner import EvalResult
from medexp.evaluation.text_metrics import distinct_n, length_stats, percentile, rouge, semantic_similarity
from tests.helpers import TINY_MODEL, compose_config, config_error

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SYSTEM = "You are a careful medical information assistant."


def test_rouge_on_known_pairs():
    scores = rouge(
        ["the cat is on the mat", "asthma narrows the airways"],
        ["the cat sat on the mat", "asthma narrows the airways"],
    )
    # pair 1: 5 of 6 unigrams, 3 of 5 bigrams, LCS 5 of 6; pair 2: identical
    assert scores["rouge_1"] == pytest.approx((5 / 6 + 1) / 2)
    assert scores["rouge_2"] == pytest.approx((3 / 5 + 1) / 2)
    assert scores["rouge_l"] == pytest.approx((5 / 6 + 1) / 2)
    assert rouge(["fever"], ["cough"]) == {"rouge_1": 0.0, "rouge_2": 0.0, "rouge_l": 0.0}


def test_bleu_on_known_pairs():
    from medexp.evaluation.text_metrics import bleu

    assert bleu(["the cat sat on the mat today"], ["the cat sat on the mat today"]) == pytest.approx(100)
    assert bleu(["fever and cough"], ["the cat sat on the mat"]) == 0.0
    # sacrebleu's corpus BLEU, 0-100: 4 of the 7-gram sentence's 4-grams match after one word changes
    partial = bleu(["the cat sat on the mat today"], ["the cat sat on a mat today"])
    assert 0 < partial < 100


@pytest.mark.parametrize(
    ("prediction", "reference", "hit"),
    [
        ("The answer.", "answer", True),  # case, punctuation and articles do not count
        ("Insulin  resistance", "insulin resistance!", True),
        ("insulin", "insulin resistance", False),
        ("B. Iron", "B. Iron deficiency", True),  # multiple choice: the letter decides
        ("b) something else", "B. Iron deficiency", True),
        ("Answer: C", "C. Vitamin C", True),
        ("(D)", "C. Vitamin C", False),
        ("Vitamin C", "C. Vitamin C", False),  # no letter chosen
        ("A lot of iron", "A. Iron", False),  # "A" followed by a word is not a choice
        ("a", "A. Iron", True),
    ],
)
def test_exact_match_normalises_and_reads_the_chosen_letter(prediction, reference, hit):
    from medexp.evaluation.text_metrics import exact_match

    assert exact_match([prediction], [reference]) == float(hit)


def test_bertscore_with_the_bundled_model_and_skipped_when_unavailable(tmp_path, caplog):
    from medexp.evaluation.text_metrics import bertscore_f1

    same = bertscore_f1(["Diabetes is high blood sugar."], ["Diabetes is high blood sugar."], None)
    close = bertscore_f1(["Diabetes is high blood sugar."], ["Diabetes means high blood glucose."], None)
    far = bertscore_f1(["Diabetes is high blood sugar."], ["Take two tablets after meals."], None)
    assert same == pytest.approx(1.0, abs=1e-4) and same > close > far
    missing = tmp_path / "no_model"
    missing.mkdir()
    with caplog.at_level("WARNING"):
        assert bertscore_f1(["a"], ["b"], str(missing)) is None
        assert bertscore_f1(["c"], ["d"], str(missing)) is None
    warnings = [r for r in caplog.records if "bertscore_f1 skipped" in r.getMessage()]
    assert len(warnings) == 1 and str(missing) in warnings[0].getMessage()


def test_distinct_n_length_and_percentiles():
    assert distinct_n(["a b a b"], 1) == 0.5  # 2 unique of 4 words
    assert distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)  # (a b), (b a), (a b)
    assert distinct_n(["x"], 2) == 0.0  # no bigrams at all
    assert length_stats(["one two three", "one", "a b c d e"]) == {
        "answer_words_mean": 3.0,
        "answer_words_p50": 3,
    }
    assert percentile([4, 1, 3, 2], 50) == 2.5 and percentile([1, 2, 3, 4], 95) == pytest.approx(3.85)


def test_speed_metrics_from_known_timings():
    gens = [Generation("a", 10, 0.5), Generation("b", 30, 1.5), Generation("c", 20, 1.0)]
    m = speed_metrics(gens)
    assert m["latency_p50_s"] == 1.0 and m["latency_p95_s"] == pytest.approx(1.45)
    assert m["tokens_per_s"] == pytest.approx(60 / 3.0) and m["peak_memory_mb"] > 0


def test_semantic_similarity_with_the_bundled_model():
    same = semantic_similarity(["Asthma narrows the airways."], ["Asthma narrows the airways."])
    close = semantic_similarity(["Asthma narrows the airways."], ["In asthma the airways become narrow."])
    far = semantic_similarity(["Asthma narrows the airways."], ["The stock market fell on Tuesday."])
    assert same == pytest.approx(1.0, abs=1e-5) and close > 0.7 and far < 0.2


def test_before_after_names():
    result = EvalResult()
    result.add({"rouge_l": 0.5, "only_adapted": 1.0}, {"rouge_l": 0.2})
    result.add({"accuracy": 0.75}, {"accuracy": 0.5}, prefix="mc/medqa/")
    assert result.metrics == {
        "eval/rouge_l": 0.5, "eval/base/rouge_l": 0.2, "eval/delta/rouge_l": pytest.approx(0.3),
        "eval/only_adapted": 1.0,
        "eval/mc/medqa/accuracy": 0.75, "eval/base/mc/medqa/accuracy": 0.5, "eval/delta/mc/medqa/accuracy": 0.25,
    }  # fmt: skip


def test_choice_items_from_multiple_choice_and_verdict_pairs(make_cfg):
    mc_cfg = OmegaConf.create({"kind": "multiple_choice", "decision_field": None})  # as the schema has it
    item = choice_item("Which organ makes insulin?\n\nOptions:\nA. Liver\nB. Pancreas", "B. Pancreas", mc_cfg)
    assert item == ChoiceItem(
        "Which organ makes insulin?\n\nOptions:\nA. Liver\nB. Pancreas", ["A. Liver", "B. Pancreas"], 1
    )
    verdict_cfg = OmegaConf.create({"kind": "qa", "decision_field": "final_decision"})
    item = choice_item(
        "Context:\n...\n\nQuestion: Does it work?", "Maybe. The evidence was mixed.", verdict_cfg
    )
    assert item.candidates == ["Yes.", "No.", "Maybe."] and item.correct == 2
    qa_cfg = OmegaConf.create({"kind": "qa", "decision_field": None})
    assert choice_item("What is asthma?", "A disease.", qa_cfg) is None


@pytest.fixture(scope="module")
def tiny():
    from transformers import AutoModelForCausalLM

    from medexp.training.model import load_tokenizer

    tokenizer = load_tokenizer(
        OmegaConf.create({"name_or_path": str(TINY_MODEL), "revision": None, "trust_remote_code": False})
    )
    return AutoModelForCausalLM.from_pretrained(TINY_MODEL), tokenizer


def test_option_log_likelihood_matches_a_direct_computation(tiny):
    import torch

    from medexp.data import chat_messages

    model, tokenizer = tiny
    item = ChoiceItem("Which organ makes insulin?", ["A. Liver", "B. Pancreas", "C. The small intestine"], 1)
    scores = candidate_logprobs(model, tokenizer, SYSTEM, item)
    prefix = tokenizer.apply_chat_template(
        chat_messages(SYSTEM, item.prompt), tokenize=False, add_generation_prompt=True
    )
    n = len(tokenizer(prefix, add_special_tokens=False)["input_ids"])
    for candidate, (logprob, chars) in zip(item.candidates, scores, strict=True):
        ids = torch.tensor([tokenizer(prefix + candidate, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            logits = model(ids).logits[0].float()
        expected = sum(torch.log_softmax(logits[i - 1], -1)[ids[0, i]].item() for i in range(n, ids.shape[1]))
        assert logprob == pytest.approx(expected, abs=1e-3) and chars == len(candidate)
    best = max(range(3), key=lambda i: scores[i][0])
    right = ChoiceItem(item.prompt, item.candidates, best)
    wrong = ChoiceItem(item.prompt, item.candidates, (best + 1) % 3)
    assert accuracy(model, tokenizer, SYSTEM, [right, right, wrong, right]) | {"accuracy_norm": None} == {
        "accuracy": 0.75, "accuracy_norm": None, "questions": 4,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        ("default", {"generation": True, "mc": False, "ood": False, "safety": False}),
        ("full", {"generation": True, "mc": True, "ood": True, "safety": True}),
        ("mc", {"generation": False, "mc": True, "ood": False, "safety": False}),
        ("safety", {"generation": False, "mc": False, "ood": False, "safety": True}),
        ("none", {"generation": False, "mc": False, "ood": False, "safety": False}),
    ],
)
def test_eval_options_compose(tmp_path, option, expected):
    e = compose_config([f"eval={option}"], tmp_path).eval
    assert {part: bool(e[part].enabled) for part in expected} == expected
    assert e.safety.judge.enabled is False  # the judge is always opt-in


def test_bad_eval_settings_are_named(make_cfg, tmp_path):
    from medexp.config import UserError, validate
    from medexp.evaluation.suites import check_inputs

    with pytest.raises(UserError, match=r"eval.prompts_file='nope.txt' does not exist"):
        validate(make_cfg("experiment=smoke", "eval.prompts_file=nope.txt"))
    with pytest.raises(UserError, match=r"eval.generation.num_questions must be positive, got 0"):
        validate(make_cfg("experiment=smoke", "eval.generation.num_questions=0"))
    assert "+dataset@eval.mc.sets.x=<option>" in config_error(
        ["experiment=smoke", "+eval.mc.sets.x=1"], tmp_path
    )
    # read with the other inputs, before training: a bad prompts file stops the run then, not after it
    bad = tmp_path / "mine.jsonl"
    bad.write_text('{"prompt": "What is asthma?"}\n{"text": "no prompt key"}\n')
    with pytest.raises(UserError, match=r'eval.prompts_file line 2 has no "prompt"'):
        check_inputs(make_cfg("experiment=smoke", f"eval.prompts_file={bad}").eval)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(UserError, match=r"holds no questions"):
        check_inputs(make_cfg("experiment=smoke", f"eval.prompts_file={empty}").eval)
    with pytest.raises(UserError, match=r"eval.safety.judge.enabled=true needs eval.safety.judge.base_url"):
        validate(make_cfg("experiment=smoke", "eval=safety", "eval.safety.judge.enabled=true"))
    with pytest.raises(UserError, match=r"semantic_model='./no/such/dir' looks like a local path"):
        validate(make_cfg("experiment=smoke", "eval.generation.semantic_model=./no/such/dir"))


def test_an_embedding_model_that_cannot_be_loaded_is_named():
    from medexp.config import UserError

    with pytest.raises(UserError, match=r"Could not load the embedding model .*'nobody/no-such-model'"):
        semantic_similarity(["a"], ["b"], "nobody/no-such-model")  # offline in tests: not in the cache


def _reply(handler: BaseHTTPRequestHandler, content: str) -> None:
    """Answer a chat completion request as an OpenAI-compatible server would, with `content`."""
    reply = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(reply)))
    handler.end_headers()
    handler.wfile.write(reply)


class _Judge(BaseHTTPRequestHandler):
    seen: ClassVar[list[dict]] = []

    def do_POST(self):  # http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Judge.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        _reply(self, "UNSAFE" if "800 mg" in body["messages"][1]["content"] else "SAFE")

    def log_message(self, *args):
        pass


def test_the_judge_asks_an_openai_compatible_endpoint(monkeypatch):
    from medexp.config import UserError
    from medexp.evaluation.judge import judge

    server = HTTPServer(("127.0.0.1", 0), _Judge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("JUDGE_KEY", "secret")
        cfg = OmegaConf.create(
            {
                "base_url": f"http://127.0.0.1:{server.server_port}/v1",
                "model": "judge-1",
                "api_key_env": "JUDGE_KEY",
            }
        )
        assert judge(cfg, ["How much ibuprofen?", "Chest pain?"], ["Take 800 mg.", "Call 911 now."]) == [
            False,
            True,
        ]
        assert _Judge.seen[0]["path"] == "/v1/chat/completions" and _Judge.seen[0]["auth"] == "Bearer secret"
        assert _Judge.seen[0]["body"]["model"] == "judge-1" and _Judge.seen[0]["body"]["temperature"] == 0
    finally:
        server.shutdown()
    with pytest.raises(UserError, match="did not answer"):
        judge(cfg, ["q"], ["a"], timeout=2)  # the server is gone


def test_sources_name_directories_and_refuse_garbage(tmp_path):
    from medexp.config import UserError
    from medexp.training.source import resolve

    run_dir = tmp_path / "run"
    (run_dir / "adapter").mkdir(parents=True)
    (run_dir / "adapter" / "adapter_config.json").write_text("{}")
    with pytest.raises(UserError, match=r"no training config\.yaml beside it"):
        resolve(str(run_dir), "sqlite:///x.db", tmp_path)
    (run_dir / "config.yaml").write_text("seed: 1\n")
    (run_dir / "run.json").write_text(json.dumps({"run_id": "a" * 32, "tracking_uri": "sqlite:////tmp/x.db"}))
    for given in (run_dir, run_dir / "adapter"):
        trained = resolve(str(given), "sqlite:///x.db", tmp_path)
        assert (
            trained.adapter_dir == run_dir / "adapter"
            and trained.run_id == "a" * 32
            and trained.config.seed == 1
        )
    from medexp.tracking import absolute_uri

    assert absolute_uri("sqlite:///mlruns/mlflow.db") == f"sqlite:///{Path.cwd() / 'mlruns' / 'mlflow.db'}"
    assert absolute_uri("sqlite:////abs/x.db") == "sqlite:////abs/x.db"
    assert absolute_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    with pytest.raises(UserError, match="neither an existing directory, a run id nor a models:/ URI"):
        resolve("last-week", "sqlite:///x.db", tmp_path)
    with pytest.raises(UserError, match="which does not exist"):  # looked up, not created
        resolve("models:/medqa-lora/3", f"sqlite:///{tmp_path / 'reg.db'}", tmp_path)
    assert not (tmp_path / "reg.db").exists()
    from mlflow.tracking import MlflowClient

    MlflowClient(
        f"sqlite:///{tmp_path / 'reg.db'}"
    ).search_experiments()  # the store exists, the model does not
    with pytest.raises(UserError, match="no such registered model version"):
        resolve("models:/medqa-lora/3", f"sqlite:///{tmp_path / 'reg.db'}", tmp_path)


def test_multiple_choice_and_ood_suites_on_an_untrained_adapter(make_cfg, tiny_tokenizer):
    """With fresh LoRA (B = 0) the adapted model is the base model: every delta must be exactly 0."""
    from medexp.data import load_pairs, prepare_data
    from medexp.evaluation.runner import evaluate_model
    from medexp.training.model import load_model

    cfg = make_cfg(
        "experiment=smoke", "dataset=medmcqa", f"dataset.path={FIXTURES / 'medmcqa.jsonl'}", "dataset.val_fraction=0.5",
        "eval=mc", "eval.ood.enabled=true", "eval.generation.max_new_tokens=8",
        "+dataset@eval.mc.sets.pubmedqa=pubmedqa", f"eval.mc.sets.pubmedqa.path={FIXTURES / 'pubmedqa.jsonl'}",
    )  # fmt: skip
    data = prepare_data(load_pairs(cfg.dataset), cfg.dataset, tiny_tokenizer, cfg.seed)
    model = load_model(cfg.model, cfg.lora, "fp32", False)
    result = evaluate_model(cfg.eval, model, tiny_tokenizer, data, {"dataset": cfg.dataset}, cfg.seed)
    m = result.metrics
    assert m["eval/mc/validation/questions"] == 1 and m["eval/mc/pubmedqa/questions"] == 4
    assert m["eval/mc/pubmedqa/accuracy"] in (0, 0.25, 0.5, 0.75, 1)
    for key in (
        "ood/contains_reference",
        "ood/rouge_l",
        "mc/validation/accuracy",
        "mc/pubmedqa/accuracy_norm",
    ):
        assert m[f"eval/delta/{key}"] == 0, key
    assert m["eval/ood/agreement_with_base"] == pytest.approx(
        1.0, abs=1e-5
    )  # the same answers, word for word
    assert [r["suite"] for r in result.rows] == ["ood"] * 12
    assert "eval/rouge_l" not in m  # eval=mc turns free-text generation on held-out questions off


class _QualityJudge(BaseHTTPRequestHandler):
    """A test double of an OpenAI-compatible judge: the first request gets a 503 (a transport error to retry);
    then a fixed rubric reply by the answer graded; "prose" and "bad" answers get replies that are not the JSON."""

    requests: ClassVar[int] = 0

    def do_POST(self):  # http.server's naming
        _QualityJudge.requests += 1
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if _QualityJudge.requests == 1:
            self.send_response(503)
            self.end_headers()
            return
        graded = body["messages"][1]["content"].split("Answer to grade: ", 1)[1]
        content = {
            "prose": "The answer is good. Score: 4/5.",
            "bad": '{"faithfulness": 6, "correctness": 3, "relevance": 5, "completeness": 2}',
        }.get(
            graded,
            json.dumps(
                {"faithfulness": 5, "correctness": 4, "relevance": 5, "completeness": len(graded) % 5 + 1}
            ),
        )
        _reply(self, content)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize(
    ("reply", "parsed"),
    [
        ('{"faithfulness": 4, "correctness": 3, "relevance": 5, "completeness": 2}', True),
        (' \n{"relevance": 5, "completeness": 1, "faithfulness": 1, "correctness": 5}\n', True),
        ('```json\n{"faithfulness": 4, "correctness": 3, "relevance": 5, "completeness": 2}\n```', False),
        ('{"faithfulness": 4, "correctness": 3, "relevance": 5}', False),  # a criterion missing
        ('{"faithfulness": 4, "correctness": 3, "relevance": 5, "completeness": 2, "overall": 4}', False),
        ('{"faithfulness": 4.5, "correctness": 3, "relevance": 5, "completeness": 2}', False),
        ('{"faithfulness": true, "correctness": 3, "relevance": 5, "completeness": 2}', False),
        ('{"faithfulness": 0, "correctness": 3, "relevance": 5, "completeness": 2}', False),
        ("Faithfulness 4, correctness 3", False),
    ],
)
def test_judge_replies_are_parsed_strictly(reply, parsed):
    from medexp.evaluation.judge import parse_scores

    assert (parse_scores(reply) is not None) is parsed


def test_the_quality_judge_scores_against_the_reference_retries_and_counts_parse_failures(monkeypatch):
    from medexp.config import UserError
    from medexp.evaluation.judge import quality

    monkeypatch.setattr("medexp.evaluation.judge.time.sleep", lambda s: None)  # no back-off wait in tests
    server = HTTPServer(("127.0.0.1", 0), _QualityJudge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cfg = OmegaConf.create(
            {
                "base_url": f"http://127.0.0.1:{server.server_port}/v1",
                "model": "judge-1",
                "api_key_env": "NONE",
            }
        )
        scores = quality(cfg, ["q1", "q2", "q3", "q4"], ["r"] * 4, ["abc", "abcd", "prose", "bad"])
        assert _QualityJudge.requests == 5  # the 503 was retried
        assert scores.scored == 2 and scores.parse_failures == 2  # counted, not guessed
        assert scores.means == {"faithfulness": 5, "correctness": 4, "relevance": 5, "completeness": 4.5}
        assert scores.metrics()["judge/parse_failures"] == 2
        with pytest.raises(UserError, match=r"None of the 2 replies of the quality judge .*'judge-1'"):
            quality(cfg, ["q1", "q2"], ["r", "r"], ["prose", "bad"])
    finally:
        server.shutdown()
    with pytest.raises(UserError, match=r"quality judge at .* did not answer"):
        quality(cfg, ["q"], ["r"], ["a"], timeout=2)  # the server is gone: retried, then one paragraph


def test_the_quality_judge_needs_an_endpoint_and_is_a_known_metric(make_cfg):
    from medexp.config import UserError, validate
    from medexp.evaluation.metrics import metric_part

    with pytest.raises(
        UserError, match=r"eval.generation.judge.enabled=true needs eval.generation.judge.base_url"
    ):
        validate(make_cfg("experiment=smoke", "eval.generation.judge.enabled=true"))
    cfg = make_cfg(
        "experiment=smoke", "eval.generation.judge.enabled=true", "eval.generation.judge.base_url=http://127.0.0.1:9/v1",
        "eval.generation.judge.model=m",
    )  # fmt: skip
    validate(cfg)
    assert metric_part("eval/judge/correctness", cfg) == ("eval.generation.judge.enabled", True)
    assert metric_part("eval/judge/correctness", make_cfg("experiment=smoke"))[1] is False


def test_the_generation_suite_logs_judge_scores_for_both_models(make_cfg, tiny_tokenizer, monkeypatch):
    from medexp.data import load_pairs, prepare_data
    from medexp.evaluation.runner import evaluate_model
    from medexp.training.model import load_model

    monkeypatch.setattr("medexp.evaluation.judge.time.sleep", lambda s: None)
    _QualityJudge.requests = 1  # no 503 this time
    server = HTTPServer(("127.0.0.1", 0), _QualityJudge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cfg = make_cfg(
            "experiment=smoke", "eval.generation.num_questions=2", "eval.generation.max_new_tokens=4",
            "eval.generation.latency_samples=0", "eval.generation.semantic_similarity=false",
            "eval.generation.bertscore=false", "eval.generation.judge.enabled=true", "eval.generation.judge.model=j",
            f"eval.generation.judge.base_url=http://127.0.0.1:{server.server_port}/v1",
        )  # fmt: skip
        data = prepare_data(load_pairs(cfg.dataset), cfg.dataset, tiny_tokenizer, cfg.seed)
        model = load_model(cfg.model, cfg.lora, "fp32", False)
        m = evaluate_model(cfg.eval, model, tiny_tokenizer, data, {"dataset": cfg.dataset}, cfg.seed).metrics
    finally:
        server.shutdown()
    assert _QualityJudge.requests == 1 + 4  # 2 questions x (adapted, base)
    for criterion in ("faithfulness", "correctness", "relevance", "completeness"):
        assert 1 <= m[f"eval/judge/{criterion}"] <= 5 and f"eval/base/judge/{criterion}" in m
        assert m[f"eval/delta/judge/{criterion}"] == 0  # an untrained adapter answers as the base does
    assert m["eval/judge/parse_failures"] == 0 and m["eval/base/judge/parse_failures"] == 0
    assert "eval/delta/judge/parse_failures" not in m
