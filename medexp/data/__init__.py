"""Data: reading hub datasets and local files, cleaning, chat formatting and splitting."""

from medexp.data.loading import (
    RawPairs,
    Source,
    load_mixture,
    load_pairs,
    read_rows,
    resolve_columns,
    sources,
)
from medexp.data.multiple_choice import MCFields, MCItem, Skip, normalise, normalise_rows
from medexp.data.prepare import PreparedData, chat_messages, prepare_data, tokenize_pairs

__all__ = [
    "MCFields",
    "MCItem",
    "PreparedData",
    "RawPairs",
    "Skip",
    "Source",
    "chat_messages",
    "load_mixture",
    "load_pairs",
    "normalise",
    "normalise_rows",
    "prepare_data",
    "read_rows",
    "resolve_columns",
    "sources",
    "tokenize_pairs",
]
