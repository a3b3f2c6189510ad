"""Errors of the dataset builders; the CLI turns any :class:`DatasetError` into a clear message."""

from __future__ import annotations


class DatasetError(Exception):
    """Base class: a dataset cannot be provided; the message says what to do."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """The dataset is in none of the places searched; the message says how to get it."""


class DatasetCorruptError(DatasetError, ValueError):
    """A dataset file exists but is unreadable or inconsistent; the message names file and fault."""
