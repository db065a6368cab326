"""Runs one of llama.cpp's own converters (convert_hf_to_gguf.py or convert_lora_to_gguf.py) in this process,
with its own gguf-py first on sys.path, as `python <script> ...` would, with one addition: a pre-tokenizer name
for a byte-level BPE tokenizer the converter does not recognise. Started by medexp.serving.gguf as

    python -m medexp.serving.gguf_runner <llama.cpp dir> <script> <pre-tokenizer or ""> -- <the script's arguments>

The converter recognises a BPE tokenizer by hashing how it splits a test text, and refuses any tokenizer it has
no hash for, even one whose pre-tokenizer is exactly GPT-2's (medexp's embedded tiny model's is). llama.cpp
splits by the pre-tokenizer name written into the GGUF, so naming the right one is all the converter would do.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

UNKNOWN_TOKENIZER_EXIT = 3  # the converter does not know the tokenizer and no name was given


def _name_pre_tokenizer(pre_tokenizer: str) -> None:
    """Make the converter's TextModel.get_vocab_base_pre answer `pre_tokenizer` where it knows no hash."""
    from conversion import base  # llama.cpp's own package, importable once its folder is on sys.path

    known = base.TextModel.get_vocab_base_pre

    def get_vocab_base_pre(self, tokenizer) -> str:
        try:
            return known(self, tokenizer)
        except NotImplementedError:
            if not pre_tokenizer:
                sys.exit(UNKNOWN_TOKENIZER_EXIT)
            print(
                f"medexp: the converter does not know this tokenizer; pre-tokenizer {pre_tokenizer!r} given"
            )
            return pre_tokenizer

    base.TextModel.get_vocab_base_pre = get_vocab_base_pre


def main(argv: list[str]) -> None:
    llama_dir, script, pre_tokenizer, dashes, *args = argv
    assert dashes == "--", argv
    folder = Path(llama_dir)
    sys.path[:0] = [str(folder / "gguf-py"), str(folder)]
    _name_pre_tokenizer(pre_tokenizer)
    sys.argv = [str(folder / script), *args]
    runpy.run_path(str(folder / script), run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
