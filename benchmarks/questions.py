"""The four MedQuAD questions the parity checks answer: GGUF in llama.cpp against transformers
(benchmarks/gguf_parity.py) and vLLM against medexp's own engine (benchmarks/gpu/vllm_adapter.py)."""

QUESTIONS = [
    "What causes epilepsy ?",
    "How to prevent glaucoma ?",
    "What is anemia?",
    "Who is at risk for asthma?",
]
