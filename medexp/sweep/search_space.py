"""Hydra's sweep override grammar -> Optuna distributions, as Hydra's own Optuna sweeper maps them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def quote_value(value: Any) -> str:
    """A value as a quoted string of Hydra's override grammar (URLs, paths with spaces or quotes)."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def search_space(arguments: Sequence[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Hydra override grammar -> (Optuna distributions, fixed overrides), as Hydra's Optuna sweeper does.

    choice(a, b) -> categorical; interval(lo, hi) -> float (Hydra parses its bounds as floats); tag(log, ...)
    -> log scale; range(start, stop, step) -> stepped ints or floats, stop excluded as in Hydra's grammar.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import Glob, Transformer
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    space: dict[str, Any] = {}
    fixed: dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(list(arguments)):
        key = override.get_key_element()
        if not override.is_sweep_override():
            fixed[key] = override.get_value_element_as_str()
            continue
        value = override.value()
        if isinstance(value, Glob):
            raise ValueError(
                f"{override.input_line} is a glob over config groups, which Optuna cannot sample"
            )
        if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
            space[key] = CategoricalDistribution(
                list(override.sweep_iterator(transformer=Transformer.encode))
            )
        elif override.is_range_sweep():
            ints = all(isinstance(x, int) for x in (value.start, value.stop, value.step))
            kind = IntDistribution if ints else FloatDistribution
            # the largest value the range reaches below stop
            high = value.start + ((value.stop - value.start - 1e-12) // value.step) * value.step
            space[key] = kind(value.start, int(high) if ints else high, step=value.step)
        elif override.is_interval_sweep():
            ints = isinstance(value.start, int) and isinstance(value.end, int)
            kind = IntDistribution if ints else FloatDistribution
            space[key] = kind(value.start, value.end, log="log" in value.tags)
        else:
            raise ValueError(f"{override.input_line} is not a sweep Optuna can sample")
    for key in fixed:  # a command-line value fixes a parameter of the configured space
        space.pop(key, None)
    return space, fixed
