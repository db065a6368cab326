"""The one walk over a config tree: every leaf as a dotted key."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from omegaconf import DictConfig, OmegaConf


def leaves(cfg: DictConfig, resolve: bool) -> Iterator[tuple[str, Any]]:
    """(dotted key, value) for every leaf, depth first in key order; lists count as leaves."""

    def walk(node: Any, prefix: str) -> Iterator[tuple[str, Any]]:
        if isinstance(node, dict):
            for key, value in node.items():
                yield from walk(value, f"{prefix}{key}.")
        else:
            yield prefix[:-1], node

    yield from walk(OmegaConf.to_container(cfg, resolve=resolve), "")


def missing_keys(cfg: DictConfig) -> list[str]:
    """Dotted keys still set to `???`, found without resolving any interpolation."""
    return sorted(key for key, value in leaves(cfg, resolve=False) if value == "???")
