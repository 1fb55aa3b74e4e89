"""Reading `modelyard fetch`'s JSON lines: the download's progress and its last error."""
from __future__ import annotations

import json
from typing import Any


def last_events(log_text: str) -> dict[str, Any]:
    """The latest main-file progress, and the error or the completion, found in a log tail.

    Lines that are not JSON (a traceback, a shell message) are skipped: a tail cut in
    the middle of a line must not break the reading.
    """
    found: dict[str, Any] = {}
    for line in reversed(log_text.splitlines()):
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if not isinstance(event, dict):
            continue
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
