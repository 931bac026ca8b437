"""Store each grid cell's result on its own, keyed by a hash of everything that can change it."""
from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import asdict
from pathlib import Path

from resreport.cells import Cell, CellResult
from resreport.store import atomic_write_bytes

PACKAGE_DIR = Path(__file__).resolve().parent


def digest(payload) -> str:
    """Hash any JSON-able value (sorted keys, so dict order never matters)."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def code_fingerprint(module_files: list[str]) -> str:
    """Hash the source of the package modules that compute a suite (names relative to resreport/)."""
    sha = hashlib.sha256()
    for name in sorted(module_files):
        sha.update(name.encode())
        sha.update((PACKAGE_DIR / name).read_bytes())
    return sha.hexdigest()


def key_parts(cell: Cell, settings: dict, code: str, data: str | None, torch_version: str, device: str) -> dict:
    """Return the named parts of a cell's key; `status` reports which of them changed."""
    return {
        "cell": digest(asdict(cell)),
        "settings": digest(settings),
        "code": code,
        "data": data or "none",
        "torch": torch_version,
        "device": device,
    }


class CellCache:
    """One folder per suite; per cell a result pickle and, written last, a JSON record of its key."""

    def __init__(self, root: Path, suite: str):
        self.folder = Path(root) / suite

    def _paths(self, cell: Cell, key: str) -> tuple[Path, Path]:
        """Return (key record, result pickle) for a cell and key."""
        stem = f"{cell.cell_id}.{key[:16]}"
        return self.folder / f"{stem}.json", self.folder / f"{stem}.pkl"

    def load(self, cell: Cell, parts: dict) -> CellResult | None:
        """Return the cached result for this exact key, or None."""
        record, payload = self._paths(cell, digest(parts))
        if not (record.is_file() and payload.is_file()):
            return None
        if json.loads(record.read_text())["parts"] != parts:
            return None
        with payload.open("rb") as handle:
            return pickle.load(handle)

    def save(self, cell: Cell, parts: dict, result: CellResult) -> None:
        """Write the result, then its key record; a cell counts as cached only once both exist."""
        record, payload = self._paths(cell, digest(parts))
        atomic_write_bytes(payload, pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
        atomic_write_bytes(record, json.dumps({"cell": cell.cell_id, "parts": parts}).encode())
        self.failure_path(cell).unlink(missing_ok=True)

    def failure_path(self, cell: Cell) -> Path:
        return self.folder / f"{cell.cell_id}.failed.json"

    def save_failure(self, cell: Cell, parts: dict, error: str) -> None:
        """Record why a cell raised, so `status` and the next build can show it."""
        atomic_write_bytes(self.failure_path(cell), json.dumps({"cell": cell.cell_id, "parts": parts,
                                                                "error": error}).encode())

    def state(self, cell: Cell, parts: dict) -> tuple[str, list[str]]:
        """Return ('cached' | 'stale' | 'missing' | 'failed', key parts that differ from the newest other entry)."""
        key = digest(parts)
        if self._paths(cell, key)[0].is_file():
            return "cached", []
        if self.failure_path(cell).is_file():
            failed = json.loads(self.failure_path(cell).read_text())
            if failed["parts"] == parts:
                return "failed", []
        records = sorted(self.folder.glob(f"{cell.cell_id}.*.json"), key=lambda p: p.stat().st_mtime)
        records = [r for r in records if not r.name.endswith(".failed.json")]
        if not records:
            return "missing", []
        previous = json.loads(records[-1].read_text())["parts"]
        return "stale", sorted(name for name in parts if previous.get(name) != parts[name])
