"""Why a cut-out may be wrong: the reasons a person should look at it.

A :class:`ReviewReason` is a short machine code and one sentence for the
seller. The signals behind them and their thresholds are measured in
:mod:`generation.engine.cut` and documented in docs/engine.md.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReviewReason:
    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}
