"""Data: reading hub datasets and local files (one reader per format), cleaning, chat formatting and splitting."""

from medexp.data.chat import chat_messages, tokenize_pairs
from medexp.data.loading import load_mixture, load_pairs, sources
from medexp.data.multiple_choice import MCFields, MCItem, Skip, normalise, normalise_rows
from medexp.data.prepare import prepare_data
from medexp.data.prepared import PreparedData, SourceReport
from medexp.data.readers import Reader, check_sources, reader_for, register_reader
from medexp.data.readers.qa import resolve_columns
from medexp.data.records import Dialogue, Document, PreferencePair, QAPair
from medexp.data.rows import RawRecords, Source, read_rows

__all__ = [
    "Dialogue",
    "Document",
    "MCFields",
    "MCItem",
    "PreferencePair",
    "PreparedData",
    "QAPair",
    "RawRecords",
    "Reader",
    "Skip",
    "Source",
    "SourceReport",
    "chat_messages",
    "check_sources",
    "load_mixture",
    "load_pairs",
    "normalise",
    "normalise_rows",
    "prepare_data",
    "read_rows",
    "reader_for",
    "register_reader",
    "resolve_columns",
    "sources",
    "tokenize_pairs",
]
