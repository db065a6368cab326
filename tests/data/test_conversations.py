"""Multi-turn conversations (OpenAI messages, ShareGPT): parsing, drops by reason, loss on every assistant
turn, the data's system message, and evaluation asking with the earlier turns."""

from __future__ import annotations

import json
import pickle

import pytest

from medexp.config import UserError
from medexp.data import chat_messages, load_pairs, prepare_data, tokenize_pairs
from medexp.data.readers.conversation import parse_conversation
from medexp.data.records import Dialogue

OPENAI = [
    {
        "messages": [
            {"role": "system", "content": "You are a pharmacist's assistant."},
            {"role": "user", "content": "What is ibuprofen?"},
            {"role": "assistant", "content": "An anti-inflammatory painkiller."},
            {"role": "user", "content": "Can it upset the stomach?"},
            {"role": "assistant", "content": "Yes, it can irritate the stomach lining."},
        ]
    },
    {
        "messages": [
            {"role": "user", "content": "What is a migraine?"},
            {"role": "assistant", "content": "A recurring, often one-sided headache."},
        ]
    },
    {"messages": [{"role": "user", "content": "Hello?"}]},  # nothing answers it
    {"messages": [{"role": "user", "content": "A"}, {"role": "user", "content": "B"}]},
    {"messages": [{"role": "tool", "content": "{}"}, {"role": "assistant", "content": "x"}]},
    {"messages": "not a conversation"},
    {
        "messages": [
            {"role": "user", "content": "What is a fever?"},
            {"role": "assistant", "content": ""},
        ]
    },
]
SHAREGPT = [
    {
        "conversations": [
            {"from": "human", "value": "What is anaemia?"},
            {"from": "gpt", "value": "Too few healthy red blood cells."},
            {"from": "human", "value": "What causes it?"},
            {"from": "gpt", "value": "Often a lack of iron."},
            {"from": "human", "value": "Thanks!"},  # a last user turn: cut, nothing answers it
        ]
    },
    {
        "conversations": [
            {"from": "human", "value": "What is asthma?"},
            {"from": "gpt", "value": "A condition of the airways."},
        ]
    },
]


def jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_openai_messages_are_detected_and_bad_rows_dropped_by_reason(make_cfg, tmp_path):
    path = jsonl(tmp_path / "chat.jsonl", OPENAI)
    raw = load_pairs(make_cfg("experiment=smoke", "dataset=file", f"dataset.path={path}").dataset)
    assert raw.rows_in == 7 and raw.columns == ("messages", "messages")
    assert dict(raw.dropped) == {
        "no_assistant_turn": 1,
        "turns_not_alternating": 1,
        "unknown_role": 1,
        "non_conversation": 1,
        "empty_turn": 1,
    }
    (first, answer), (second, _) = raw.pairs
    assert answer == "Yes, it can irritate the stomach lining."
    assert isinstance(first, Dialogue) and first.system == "You are a pharmacist's assistant."
    assert [t["role"] for t in first.turns] == ["user", "assistant", "user"]
    assert first == (
        "system: You are a pharmacist's assistant.\nuser: What is ibuprofen?\n"
        "assistant: An anti-inflammatory painkiller.\nuser: Can it upset the stomach?"
    )
    assert second.system is None and second == "user: What is a migraine?"


def test_sharegpt_trailing_user_turn_is_cut(make_cfg, tmp_path):
    path = jsonl(tmp_path / "sharegpt.jsonl", SHAREGPT)
    raw = load_pairs(make_cfg("experiment=smoke", "dataset=file", f"dataset.path={path}").dataset)
    assert not raw.dropped
    question, answer = raw.pairs[0]
    assert answer == "Often a lack of iron."
    assert [t["content"] for t in question.turns] == [
        "What is anaemia?",
        "Too few healthy red blood cells.",
        "What causes it?",
    ]


def test_parse_conversation_cases():
    parts = [
        {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
        {"role": "gpt", "content": "Hello"},
    ]
    question, answer = parse_conversation(parts)
    assert question.turns == ({"role": "user", "content": "Hi"},) and answer == "Hello"
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]
    assert parse_conversation(image) == "non_text_turn"
    late_system = [
        {"role": "user", "content": "a"},
        {"role": "system", "content": "b"},
        {"role": "assistant", "content": "c"},
    ]
    assert parse_conversation(late_system) == "misplaced_system"
    assert parse_conversation([{"role": "system", "content": "only"}]) == "no_assistant_turn"
    assert parse_conversation('[{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]')[1] == "a"
    assert parse_conversation([]) == "non_conversation"
    pickled = pickle.loads(pickle.dumps(question))  # worker processes get the turns, not plain text
    assert isinstance(pickled, Dialogue) and pickled.turns == question.turns


def test_loss_on_every_assistant_turn_and_the_data_system_message_wins(tiny_tokenizer):
    question, answer = parse_conversation(OPENAI[0]["messages"])
    plain = ("What is gout?", "A joint condition.")
    ids, masks = tokenize_pairs(tiny_tokenizer, "Config system prompt.", [(question, answer), plain])
    learned = tiny_tokenizer.decode([t for t, m in zip(ids[0], masks[0], strict=True) if m])
    assert learned == (
        "An anti-inflammatory painkiller.<|im_end|>\nYes, it can irritate the stomach lining.<|im_end|>\n"
    )
    whole = tiny_tokenizer.decode(ids[0])
    assert "You are a pharmacist's assistant." in whole and "Config system prompt." not in whole
    assert whole == tiny_tokenizer.apply_chat_template(
        chat_messages("ignored", question, answer), tokenize=False
    )
    # A plain pair: the answer alone, as before
    assert tiny_tokenizer.decode([t for t, m in zip(ids[1], masks[1], strict=True) if m]) == (
        "A joint condition.<|im_end|>\n"
    )
    # Without a system message in the data, the config's is used
    no_system, _ = parse_conversation(OPENAI[1]["messages"])
    assert chat_messages("Config system prompt.", no_system)[0]["content"] == "Config system prompt."


def test_conversations_train_and_evaluate_end_to_end(make_cfg, tmp_path, tiny_tokenizer):
    rows = SHAREGPT + [
        {
            "conversations": [
                {"from": "human", "value": f"What is condition {i}?"},
                {"from": "gpt", "value": f"Condition {i} is a made-up illness."},
                {"from": "human", "value": "Is it serious?"},
                {"from": "gpt", "value": f"Ask a clinician about condition {i}."},
            ]
        }
        for i in range(6)
    ]
    path = jsonl(tmp_path / "chat.jsonl", rows)
    cfg = make_cfg("experiment=smoke", "dataset=file", f"dataset.path={path}", "dataset.val_fraction=0.25")
    data = prepare_data(load_pairs(cfg.dataset), cfg.dataset, tiny_tokenizer, seed=0)
    assert data.rows_kept == 8 and len(data.validation_pairs) == 2
    for (question, answer), seq, mask in zip(
        data.train_pairs, data.train["input_ids"], data.train["completion_mask"], strict=True
    ):
        learned = tiny_tokenizer.decode([t for t, m in zip(seq, mask, strict=True) if m])
        replies = [t["content"] for t in question.turns if t["role"] == "assistant"] + [answer]
        assert learned == "".join(f"{r}<|im_end|>\n" for r in replies)
    # Evaluation asks the final question after the earlier turns
    question = data.validation_pairs[0][0]
    assert isinstance(question, Dialogue)
    prompt = tiny_tokenizer.apply_chat_template(
        chat_messages("sys", question), tokenize=False, add_generation_prompt=True
    )
    assert question.turns[0]["content"] in prompt and prompt.endswith("<|im_start|>assistant\n")


def test_a_file_of_conversations_without_answers_is_refused(make_cfg, tmp_path):
    path = jsonl(tmp_path / "chat.jsonl", [OPENAI[2], OPENAI[2]])
    with pytest.raises(UserError) as err:
        load_pairs(make_cfg("experiment=smoke", "dataset=file", f"dataset.path={path}").dataset)
    message = str(err.value)
    assert "of its 2 rows none is usable (2 no assistant turn)" in message
    assert "alternate user and assistant turns" in message


def test_messages_field_names_the_column(make_cfg, tmp_path):
    rows = [{"chat": SHAREGPT[1]["conversations"], "question": "ignored", "answer": "ignored"}]
    path = jsonl(tmp_path / "chat.jsonl", rows)
    cfg = make_cfg("experiment=smoke", "dataset=file", f"dataset.path={path}", "dataset.messages_field=chat")
    assert load_pairs(cfg.dataset).pairs[0][1] == "A condition of the airways."
    cfg.dataset.messages_field = "nope"
    with pytest.raises(UserError, match=r"dataset.messages_field='nope' is not a column"):
        load_pairs(cfg.dataset)
