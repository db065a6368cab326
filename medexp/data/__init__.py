"""Data: reading hub datasets and local files, cleaning, chat formatting and splitting."""

from medexp.data.loading import RawPairs, load_pairs, read_rows, resolve_columns
from medexp.data.prepare import PreparedData, chat_messages, prepare_data, tokenize_pairs

__all__ = [
    "PreparedData",
    "RawPairs",
    "chat_messages",
    "load_pairs",
    "prepare_data",
    "read_rows",
    "resolve_columns",
    "tokenize_pairs",
]
