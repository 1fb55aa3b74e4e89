"""Reading `modelyard fetch`'s JSON lines: the download's progress and its last error."""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any


def json_lines_backwards(log_text: str) -> Iterator[dict[str, Any]]:
    """The log's JSON objects, last first. Lines that are not JSON objects (a traceback, a shell
    message) are skipped: a tail cut in the middle of a line must not break the reading."""
    for line in reversed(log_text.splitlines()):
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            yield event


def last_events(log_text: str) -> dict[str, Any]:
    """The latest main-file progress, and the error or the completion, found in a log tail."""
    found: dict[str, Any] = {}
    for event in json_lines_backwards(log_text):
        if "size" in event and "progress" not in found:
            found["progress"] = {"size": int(event["size"]), "totalSize": event.get("totalSize")}
        elif "error" in event and "error" not in found:
            error = event["error"]
            found["error"] = error.get("message") if isinstance(error, dict) else str(error)
        elif event.get("done") and "done" not in found:
            found["done"] = True
    return found


def download_status(progress: dict[str, Any]) -> dict[str, Any]:
    """status.download from a progress event: the SSE names, and a percentage for kubectl."""
    size, total = progress["size"], progress.get("totalSize")
    result: dict[str, Any] = {"size": size}
    if isinstance(total, int) and total > 0:
        result["totalSize"] = total
        result["progress"] = f"{min(100, size * 100 // total)}%"
    return result
