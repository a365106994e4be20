"""When to post: on a new or changed failure, as a reminder while it lasts, once when it clears.

Pure: previous state and this run's check results in, the posts to make and the new
state out. The state is a small JSON document kept in S3 per database.
"""

from __future__ import annotations

from datetime import datetime, timedelta


def finding_key(result: dict) -> str:
    return f"{result['check']}:{result.get('kind') or '*'}"


def decide(previous: dict | None, results: list[dict], now: datetime, reminder_hours: float,
           digest: bool) -> tuple[list[tuple[str, dict]], dict]:
    """Returns ([(reason, result)], new_state); reason is new | changed | reminder | resolved | digest."""
    previous = previous or {}
    before = previous.get("checks", {})
    checks: dict[str, dict] = {}
    posts: list[tuple[str, dict]] = []
    for result in results:
        key = finding_key(result)
        seen = before.get(key)
        if result["status"] in ("failed", "warning"):
            if seen is None or seen.get("fingerprint") != result["fingerprint"]:
                posts.append(("new" if seen is None else "changed", result))
                checks[key] = {"fingerprint": result["fingerprint"],
                               "since": (seen or {}).get("since", now.isoformat()),
                               "last_posted": now.isoformat(), "status": result["status"]}
            elif now - datetime.fromisoformat(seen["last_posted"]) >= timedelta(hours=reminder_hours):
                posts.append(("reminder", {**result, "since": seen.get("since")}))
                checks[key] = {**seen, "last_posted": now.isoformat()}
            else:
                checks[key] = seen
        elif seen is not None:
            posts.append(("resolved", result))
    state = {"checks": checks, "last_digest": previous.get("last_digest")}
    all_clear = all(r["status"] == "ok" for r in results)
    today = now.date().isoformat()
    if digest and all_clear and previous.get("last_digest") != today:
        posts.append(("digest", {"check": "all", "status": "ok", "summary": "every verification check passed",
                                 "evidence": [], "kind": None, "backup_id": None}))
        state["last_digest"] = today
    return posts, state
