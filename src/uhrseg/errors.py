"""Errors raised for bad user input. The command line prints them on one line and exits with code 2."""

from __future__ import annotations


class UhrsegError(Exception):
    """Base class of the errors that describe a problem with the user's input, files or settings."""


class ImageReadError(UhrsegError, ValueError):
    """An image file is missing, unreadable, corrupt, truncated, empty or has an unsupported layout."""


class CheckpointError(UhrsegError, ValueError):
    """A weights file is missing, corrupt, of another format version or for another model."""


class WeightsNotFoundError(CheckpointError):
    """The packaged weights of a method are not installed (or a given weights path does not exist)."""


class OutputError(UhrsegError, OSError):
    """An output folder or file cannot be created or written."""
