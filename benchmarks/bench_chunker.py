"""Agreement of the rule-based phrase chunker with AudioGrounding's annotated phrases.

Reads the AudioGrounding v1 metadata in ``../shared/data/audiogrounding-v1/`` (skipped with a
clear line when it is absent), chunks every caption and compares the chunks with the annotated
phrase spans (:func:`acalign.data.phrases.chunk_agreement`); prints the table and appends it to
``results.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common import append_section

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "audiogrounding-v1"


def main(argv: list[str] | None = None) -> int:
    """Measure the chunker on each split present; return 0 (also when the data is absent)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"metadata folder (default: {DEFAULT_DATA})")
    parser.add_argument("--no-append", action="store_true", help="print only, do not append to results.md")
    args = parser.parse_args(argv)
    from acalign.data.manifest import read_manifest
    from acalign.data.phrases import chunk_agreement

    splits = [s for s in ("train", "val", "test") if (args.data / f"{s}.json").is_file()]
    if not splits:
        print(f"skipping the chunker benchmark: no AudioGrounding metadata in {args.data}")
        return 0
    rows = ["| split | captions | phrases | exact span | overlapping chunk | token P | token R | token F1 | chunks per phrase |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for split in splits:
        manifest = read_manifest(args.data / f"{split}.json")
        captions = [(c.tokens, [(p.start_index, p.end_index + 1) for p in c.phrases]) for _, c in manifest.captions()]
        a = chunk_agreement(captions)
        rows.append(f"| {split} | {len(captions)} | {a.phrases} | {a.exact:.3f} | {a.overlap:.3f} | "
                    f"{a.token_precision:.3f} | {a.token_recall:.3f} | {a.token_f1:.3f} | {a.chunks_per_phrase:.2f} |")
    body = "\n".join(rows) + (
        "\n\nExact span: an annotated phrase that one chunk matches token for token; overlapping: some "
        "chunk shares a token with it; token P/R: chunk tokens inside annotated phrases / annotated "
        "tokens inside chunks."
    )
    print(body)
    if not args.no_append:
        append_section(f"Phrase chunker against AudioGrounding v1 ({args.data.name})", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
