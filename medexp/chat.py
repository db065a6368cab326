"""Chat with a trained model in the terminal, tokens streamed as they are generated:

    python -m medexp.chat source=<run id | run dir | models:/name/version> [temperature=0.7] [top_p=0.9]

The training run's system prompt and chat template are applied to the whole conversation. Type /reset to
start over, /exit (or Ctrl-D) to leave.
"""

from __future__ import annotations

from omegaconf import DictConfig

from medexp.config import command, validate


@command("chat")
def main(cfg: DictConfig) -> None:
    validate(cfg)
    from medexp.serving.assistant import Sampling, chat_loop, load_assistant

    assistant = load_assistant(cfg)
    print(
        f"Chatting with {assistant.name}. /reset starts over, /exit leaves.\nSystem prompt: {assistant.system_prompt}\n"
    )
    chat_loop(assistant, Sampling(cfg.max_new_tokens, cfg.temperature, cfg.top_p))


if __name__ == "__main__":
    main()
