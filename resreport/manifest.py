"""Describe how a build was made: config, fingerprints, package versions, device, commit, timings."""
from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import platform
import subprocess
from pathlib import Path

from resreport.config import Config

PACKAGES = ["resreport", "torch", "torchvision", "numpy", "pandas", "pyarrow", "matplotlib", "jinja2", "weasyprint",
            "tqdm"]


def package_versions() -> dict[str, str]:
    """Return the installed version of each package the report depends on."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_commit(folder: Path) -> str:
    """Return the commit of the checkout holding folder, marked '+dirty' when it has local edits."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True,
                                check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder,
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return commit + ("+dirty" if dirty else "")


def build_manifest(config: Config, *, fingerprints: dict, data_source: str | None, device: str,
                   timings: dict[str, float], cells: dict[str, dict], conventions: dict[str, str]) -> dict:
    """Return the manifest.json payload for one build."""
    return {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": dataclasses.asdict(config),
        "fingerprints": fingerprints,
        "data_source": data_source,
        "packages": package_versions(),
        "device": device,
        "git_commit": git_commit(Path(__file__).resolve().parent),
        "timings": {stage: round(seconds, 2) for stage, seconds in timings.items()},
        "cells": cells,
        "conventions": conventions,
    }
