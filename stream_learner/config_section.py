"""The base of every settings section, apart so each section module can share it.

Frozen, so a running daemon's settings cannot change under it; ``extra="forbid"``, so a
misspelt key in the YAML file or the environment stops start-up instead of being ignored.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
