"""`python -m schemas` rewrites schemas/json/ from the models; a test keeps them equal."""

import json
from pathlib import Path

from schemas.events import TASKS, json_schema
from schemas.notifications import EVENTS, event_json_schema

OUT = Path(__file__).parent / "json"


def render() -> dict[str, str]:
    return {
        f"{name}.json": json.dumps(json_schema(model), indent=2, sort_keys=True) + "\n"
        for name, (_queue, model) in TASKS.items()
    } | {
        # Outgoing events, one file per event type (the broker's routing key).
        f"{name}.json": json.dumps(event_json_schema(name), indent=2, sort_keys=True) + "\n"
        for name in EVENTS
    }


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    for filename, text in render().items():
        (OUT / filename).write_text(text)
        print(OUT / filename)
