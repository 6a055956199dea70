"""`python -m api assets`: fetch the dashboard's pinned front-end packages
from the npm registry into api/ui/vendor/ (git-ignored), where the API
serves them under /ui/vendor. ops/sync and the image run it, so a fresh
machine gets them; the dashboard then loads nothing from another host.

Each package is pinned by version and by the registry's sha512 integrity of
its tarball: a tarball that does not match is refused, nothing is written.
A file already in place with the pinned content is not fetched again."""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import sys
import tarfile
from pathlib import Path
from typing import NamedTuple

import httpx

VENDOR = Path(__file__).parents[1] / "ui" / "vendor"
REGISTRY = "https://registry.npmjs.org"


class Pinned(NamedTuple):
    name: str
    version: str
    integrity: str  # sha512-<base64>, as the registry publishes it
    files: dict[str, str]  # path in the tarball -> name in VENDOR


# Chart.js: stacked bars, lines and horizontal bars with no build step (its
# UMD bundle), MIT, well kept; about 200 kB minified.
PACKAGES = (
    Pinned(
        "chart.js",
        "4.6.1",
        "sha512-hJyniucsFmq//EvXYvJ6c6mahPoI3kaxdjVH8awTaJ/fDNWeSqqqArixMJWkWNN6fcYvPU3HneSANFNYtRi61g==",
        {
            "package/dist/chart.umd.min.js": "chart.umd.min.js",
            "package/LICENSE.md": "chart.js.LICENSE.md",
        },
    ),
)


def _stamp(package: Pinned) -> Path:
    return VENDOR / f".{package.name}-{package.version}"


def fetch(package: Pinned) -> bytes:
    url = f"{REGISTRY}/{package.name}/-/{package.name.split('/')[-1]}-{package.version}.tgz"
    body = httpx.get(url, timeout=60, follow_redirects=True).raise_for_status().content
    digest = "sha512-" + base64.b64encode(hashlib.sha512(body).digest()).decode()
    if digest != package.integrity:
        raise SystemExit(f"{url}: integrity {digest} is not the pinned {package.integrity}")
    return body


def install(package: Pinned) -> None:
    """Extract the package's files into VENDOR, unless this version is there."""
    if _stamp(package).exists() and all((VENDOR / n).exists() for n in package.files.values()):
        return
    VENDOR.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(fetch(package)), mode="r:gz") as tar:
        for member, name in package.files.items():
            extracted = tar.extractfile(member)
            if extracted is None:
                raise SystemExit(f"{package.name}@{package.version} has no file {member}")
            (VENDOR / name).write_bytes(extracted.read())
    _stamp(package).touch()
    sys.stderr.write(f"vendored {package.name}@{package.version} into {VENDOR}\n")


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(
        prog="python -m api assets", description=__doc__.split("\n\n")[0]
    ).parse_args(argv)
    for package in PACKAGES:
        install(package)


if __name__ == "__main__":
    main()
