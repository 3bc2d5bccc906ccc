"""Pack what the recipes beside this file read into one archive for a device lease (64 MiB travel):
each synthetic world's world.json and its train and validate records without the renderer's notes
(`extra`, which training never reads), and each token store as it is.

    python experiments/h200-lease/pack_data.py --out .devicedata/e6.tgz
"""

from __future__ import annotations

import argparse
import io
import json
import tarfile
from pathlib import Path

import yaml

HERE = Path(__file__).parent
RECIPES = ("continue.yaml", "deeper.yaml", "wider.yaml", "wider-stem.yaml")


def slim_manifest(world: Path) -> bytes:
    rows = []
    for line in (world / "manifest.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row.get("split") != "test":  # training reads train (and validate for its eval loss)
            row.pop("extra", None)
            rows.append(json.dumps(row))
    return ("\n".join(rows) + "\n").encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(".devicedata/e6.tgz"))
    args = parser.parse_args()
    sources = {
        (s["path"], s["token_store"])
        for name in RECIPES
        for s in yaml.safe_load((HERE / name).read_text())["data"]
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(args.out, "w:gz") as tar:
        for world, store in sorted(sources):
            tar.add(Path(world) / "world.json")
            manifest = slim_manifest(Path(world))
            info = tarfile.TarInfo(str(Path(world) / "manifest.jsonl"))
            info.size = len(manifest)
            tar.addfile(info, io.BytesIO(manifest))
            tar.add(store)
    print(f"{args.out}: {args.out.stat().st_size / 2**20:.1f} MiB, {len(sources)} sources")


if __name__ == "__main__":
    main()
