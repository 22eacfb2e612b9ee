"""What the networks' architecture configs share: their form inside a checkpoint.

:class:`~uhrseg.models.NetConfig`, :class:`~uhrseg.models.SegmenterConfig` and
:class:`~uhrseg.models.RefinementConfig` are frozen dataclasses stored in a checkpoint's ``config`` entry
(:mod:`uhrseg.models.checkpoint`) as a JSON-like dictionary, and rebuilt from it by whatever version of uhrseg
loads the file.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any

__all__ = ["StoredConfig"]


class StoredConfig:
    """Mixin for a dataclass config stored in checkpoints: :meth:`to_dict` and :meth:`from_dict`."""

    def to_dict(self) -> dict[str, Any]:
        """The config as a checkpoint stores it: ``{field: value}``, tuples as lists (JSON-like)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        """The config :meth:`to_dict` stored: lists become tuples again, keys that are not fields (written by
        another version of uhrseg) are dropped, and fields ``d`` lacks (a checkpoint older than them) take their
        defaults.

        Raises
        ------
        TypeError
            If ``d`` lacks a field that has no default.
        ValueError
            If a value is out of range for the config (its constructor's checks).
        """
        names = {f.name for f in fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in names})
