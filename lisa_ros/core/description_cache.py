"""Descriptions the LLM wrote, kept on disk so a robot pays for each category once.

A small JSON file keyed by model id (the engine's ``checkpoint_id``: name@hash of the
checkpoint's files), prompt version and category (compared as ``category_key``).
Writes go to a temporary file in the same folder and replace the store atomically,
after merging what another process may have added meanwhile. A store that cannot be
read (not UTF-8, not JSON, truncated, edited by hand, not readable by this user) is moved
aside as ``<name>.corrupt-<time>`` with a warning and a fresh one started: a cache never
stops a request. User descriptions never go in here; they always win over it.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path

from lisa_ros.core.semantic import category_key

logger = logging.getLogger(__name__)

FORMAT = "lisa_ros-descriptions-1"


def default_cache_path() -> Path:
    """``$XDG_CACHE_HOME/lisa_ros/descriptions.json`` (``~/.cache/...`` without XDG_CACHE_HOME)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lisa_ros" / "descriptions.json"


class DescriptionCache:
    """get/put of one description per (model id, prompt version, category)."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path).expanduser() if path else default_cache_path()
        self._entries: dict[str, str] | None = None

    @staticmethod
    def key(model_id: str, prompt_version: str, category: str) -> str:
        return json.dumps([model_id, prompt_version, category_key(category)], ensure_ascii=False)

    def get(self, model_id: str, prompt_version: str, category: str) -> str | None:
        return self._load().get(self.key(model_id, prompt_version, category))

    def put_many(self, model_id: str, prompt_version: str, descriptions: dict[str, str]) -> None:
        """Stores several descriptions in one atomic write (an OSError is logged, not raised)."""
        if not descriptions:
            return
        new = {self.key(model_id, prompt_version, c): d for c, d in descriptions.items()}
        merged = {**self._read(), **new}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            descriptor, temporary = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp", dir=self.path.parent)
            try:
                with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                    json.dump({"format": FORMAT, "entries": merged}, handle, ensure_ascii=False, indent=1)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temporary, self.path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        except OSError as error:
            logger.warning("description cache %s not written (%s); descriptions are kept for this run only",
                           self.path, error)
        self._entries = merged

    def _load(self) -> dict[str, str]:
        if self._entries is None:
            self._entries = self._read()
        return self._entries

    def _read(self) -> dict[str, str]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as error:  # permission denied, a folder or a link loop in its place...
            return self._move_aside(error)
        try:
            data = json.loads(raw.decode("utf-8"))
            entries = data["entries"] if isinstance(data, dict) and data.get("format") == FORMAT else None
            if not isinstance(entries, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                        for k, v in entries.items()):
                raise ValueError("not a lisa_ros description store")
        except (ValueError, KeyError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
            return self._move_aside(error)
        return entries

    def _move_aside(self, error: BaseException) -> dict[str, str]:
        """Keeps an unreadable store for inspection and starts afresh: a cache never stops a request."""
        aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        try:
            os.replace(self.path, aside)
            logger.warning("description cache %s is unreadable or corrupted (%s); moved to %s and started afresh",
                           self.path, error, aside)
        except OSError:
            logger.warning("description cache %s is unreadable or corrupted (%s); ignored", self.path, error)
        return {}
