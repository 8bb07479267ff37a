"""python -m train.synthetic --out DIR --clips N --size 64 --tier A|B  (docs/design.md §6)."""

from __future__ import annotations

import argparse
import json

from train.synthetic.dataset import generate_dataset


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m train.synthetic", description="Generate synthetic talking-face clips in the clip format.")
    p.add_argument("--out", required=True, help="dataset folder to create (clips/, labels/, manifest_*.txt)")
    p.add_argument("--clips", type=int, required=True, help="number of clips")
    p.add_argument("--size", type=int, default=64, help="frame width and height in pixels (even, 16..512)")
    p.add_argument("--tier", choices=("A", "B"), default="A", help="A: clean synced clips; B: A plus desynced/expressive/degraded/frozen")
    p.add_argument("--seed", type=int, default=0, help="dataset seed; clip i is the same for any --clips and --workers")
    p.add_argument("--min-seconds", type=float, default=2.0, help="shortest clip length in seconds")
    p.add_argument("--max-seconds", type=float, default=4.0, help="longest clip length in seconds")
    p.add_argument("--identities", type=int, default=None, help="reuse this many identities (default: one per clip)")
    p.add_argument("--speech", default="synth",
                   help="synth: the formant synthesiser; tts: espeak-ng + festival (world speech v2); or engines by name, "
                        "comma-separated (flite: the held-out engine) (default: %(default)s)")
    p.add_argument("--first-index", type=int, default=0,
                   help="index of the first clip: worlds with distinct index ranges have distinct clip ids (default: %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="processes generating clips in parallel")
    p.add_argument("--overwrite", action="store_true", help="allow writing into a folder that already holds clips")
    a = p.parse_args(argv)
    if not 16 <= a.size <= 512 or a.size % 2:
        p.error(f"--size must be even and within 16..512, got {a.size}")
    summary = generate_dataset(
        out=a.out,
        clips=a.clips,
        size=a.size,
        tier=a.tier,
        seed=a.seed,
        min_seconds=a.min_seconds,
        max_seconds=a.max_seconds,
        identities=a.identities,
        workers=a.workers,
        overwrite=a.overwrite,
        speech=a.speech,
        first_index=a.first_index,
    )
    print(json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
    main()
