"""Chat with a trained model in the terminal, tokens streamed as they are generated:

    python -m medexp.chat source=<run id | run dir | models:/name/version> [temperature=0.7] [top_p=0.9]

The training run's system prompt and chat template are applied to the whole conversation. Type /reset to
start over, /exit (or Ctrl-D) to leave.
"""

from __future__ import annotations

from omegaconf import DictConfig

from medexp.config import UserError, command


@command("chat")
def main(cfg: DictConfig) -> None:
    from medexp.serving.assistant import Sampling, chat_loop, load_assistant

    if cfg.temperature < 0 or not 0 < cfg.top_p <= 1 or cfg.max_new_tokens < 1:
        raise UserError(
            f"temperature must be >= 0 (got {cfg.temperature}), top_p in (0, 1] (got {cfg.top_p}) and "
            f"max_new_tokens >= 1 (got {cfg.max_new_tokens})."
        )
    assistant = load_assistant(cfg)
    print(
        f"Chatting with {assistant.name}. /reset starts over, /exit leaves.\nSystem prompt: {assistant.system_prompt}\n"
    )
    chat_loop(assistant, Sampling(int(cfg.max_new_tokens), float(cfg.temperature), float(cfg.top_p)))


if __name__ == "__main__":
    main()
