"""Evaluation after training: the suites (generation, multiple choice, out-of-domain, safety), their metrics and
judges, reports, and the pipeline that `train` and `evaluate` both run (`medexp.evaluation.pipeline`)."""
