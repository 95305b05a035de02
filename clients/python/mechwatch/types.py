"""Typed values exchanged with the daemon."""
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import numpy as np


@dataclass
class Trace:
    """One forward pass: a vector per site, with an optional output label, id and metadata."""

    sites: Dict[str, np.ndarray]
    output: Optional[int] = None
    id: Optional[str] = None
    meta: Dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FitResult:
    """A fit trace the daemon stored; `held_out` if it joined the calibration set."""

    id: str
    held_out: bool


@dataclass(frozen=True)
class ScoreResult:
    """A scored trace: the stored event number, anomaly score, calibrated p-value and flag."""

    id: str
    event: int
    score: float
    p: float
    flagged: bool


@dataclass(frozen=True)
class FinalizeResult:
    """A finalized reference: how many traces fitted and calibrated it, its alpha, the scorer that flags,
    how many surprise terms it accounts for, per-site shrinkage, whether sites are modelled in principal
    subspaces (`model`: `full` or `subspace`) and each site's rank (its width when kept at full rank)."""

    reference: str
    fit_traces: int
    calibration_traces: int
    alpha: float
    shrinkage: Dict[str, float]
    scorer: str = "mechanism"
    terms: int = 0
    model: str = "full"
    ranks: Dict[str, int] = field(default_factory=dict)
