"""Chat with a trained model in the terminal, tokens streamed as they are generated:

    python -m medexp.chat source=<run id | run dir | models:/name/version> [temperature=0.7] [top_p=0.9]

The training run's system prompt and chat template are applied to the whole conversation. Type /reset to
start over, /exit (or Ctrl-D) to leave.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from medexp.config import UserError


def chat_loop(assistant, sampling, read=input, write=sys.stdout.write) -> int:
    """Read a question, stream the answer, keep the history; returns the number of answers given."""
    history: list[dict[str, str]] = []
    answers = 0
    while True:
        try:
            question = read("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            write("\n")
            return answers
        if question in ("/exit", "/quit"):
            return answers
        if question == "/reset":
            history = []
            write("(conversation cleared)\n")
            continue
        if not question:
            continue
        history.append({"role": "user", "content": question})
        write("model> ")
        pieces = []
        for piece in assistant.stream(history, sampling):
            pieces.append(piece)
            write(piece)
            sys.stdout.flush()
        write("\n")
        history.append({"role": "assistant", "content": "".join(pieces).strip()})
        answers += 1


@hydra.main(version_base="1.3", config_path="pkg://medexp.conf", config_name="chat")
def main(cfg: DictConfig) -> None:
    from medexp.config import missing_keys
    from medexp.inference import Sampling, load_assistant
    from medexp.source import FORMS

    try:
        if missing_keys(cfg):
            raise UserError(f"source is required. {FORMS}")
        if cfg.temperature < 0 or not 0 < cfg.top_p <= 1 or cfg.max_new_tokens < 1:
            raise UserError(
                f"temperature must be >= 0 (got {cfg.temperature}), top_p in (0, 1] (got {cfg.top_p}) and "
                f"max_new_tokens >= 1 (got {cfg.max_new_tokens})."
            )
        assistant = load_assistant(cfg)
    except UserError as err:
        print(f"medexp: error: {err}", file=sys.stderr)
        sys.exit(2)
    print(
        f"Chatting with {assistant.name}. /reset starts over, /exit leaves.\nSystem prompt: {assistant.system_prompt}\n"
    )
    chat_loop(assistant, Sampling(int(cfg.max_new_tokens), float(cfg.temperature), float(cfg.top_p)))


if __name__ == "__main__":
    main()
