"""Choose the torch device: cuda when present, unless the user asks otherwise."""
from __future__ import annotations

from resreport.config import ConfigError


def choose_device(requested: str | None = None) -> str:
    """Return 'cuda' when available and not overridden, else 'cpu'; refuse an unavailable cuda."""
    import torch

    if requested in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was requested but torch sees no CUDA device; use --device cpu")
    if requested not in ("cpu", "cuda"):
        raise ConfigError(f"--device must be cpu, cuda or auto, got {requested!r}")
    return requested
