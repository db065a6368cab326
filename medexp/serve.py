"""An OpenAI-compatible local endpoint for a trained model (FastAPI + uvicorn):

    python -m medexp.serve source=<run id | run dir | models:/name/version> [host=127.0.0.1] [port=8000]
    python -m medexp.serve 'source=[RUN_A,RUN_B,models:/medquad-lora/2]'   several adapters on one base

One adapter is folded into the weights for generation (merge=null); several stay unmerged, each served under its
own name (medexp.serving.adapters), and the request's `model` picks one.

POST /v1/chat/completions (streaming as server-sent events ending `data: [DONE]`, or not), GET /v1/models,
GET /health. The training system prompt is applied server-side; body size, max_tokens and message size are
capped (limits.*); bad requests get a 4xx with an OpenAI-style {"error": {...}} body; limits.max_concurrent
requests generate at once, their sequences decoded together (continuous batching, at most limits.max_batch in one
forward pass), limits.max_queue more wait, and the rest get a 503 with Retry-After.
"""

import sys

from omegaconf import DictConfig

from medexp.config import command, validate


@command("serve")
def main(cfg: DictConfig) -> None:
    validate(cfg)  # the port and the limits (ServeConfig, ServeLimits), before the model is loaded
    from medexp.serving.adapters import load_served
    from medexp.serving.app import create_app

    served = load_served(cfg)
    import uvicorn

    print(
        f"medexp: serving {served.summary()} on http://{cfg.host}:{cfg.port}/v1", file=sys.stderr, flush=True
    )
    uvicorn.run(create_app(served, cfg.limits), host=cfg.host, port=cfg.port, log_level="warning")


if __name__ == "__main__":
    main()
