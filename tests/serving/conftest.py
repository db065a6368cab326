"""The serving tests' trained run is the session-scoped `trained` fixture of tests/conftest.py, which
tests/evaluation/test_benchmark.py shares too: test_use.py and test_openai_surface.py serve, export and score the
same tiny model, so it is trained once per session rather than once per module."""
