"""`python -m api openapi [PATH]`: write the OpenAPI document the API
serves (/schema/openapi.json) to api/openapi.json, the copy kept in the
repository. tests/system/test_fuzz_api.py fails when the two differ, so run this
after changing a route or a shape."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from api.app import create_app
from runtime.settings import Settings

DEFAULT_PATH = Path(__file__).parents[1] / "openapi.json"


def document() -> str:
    """The document as committed: the app's schema, indented, keys sorted
    (Litestar merges response headers through a set, so their order changes
    from one process to the next), one trailing newline. Building the app
    opens no connection (that happens in its lifespan)."""
    schema = create_app(Settings()).openapi_schema.to_schema()
    return json.dumps(schema, indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m api openapi", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "path", nargs="?", type=Path, default=DEFAULT_PATH, help=f"default: {DEFAULT_PATH}"
    )
    path = parser.parse_args(argv).path
    path.write_text(document(), encoding="utf-8")
    sys.stderr.write(f"wrote {path}\n")


if __name__ == "__main__":
    main()
