"""Deterministic test data: Zipf text, gensort-style records, a two-table join.

    python -m kubemr.datagen text --size 1GB --output corpus.txt
    python -m kubemr.datagen sort --size 100MB --output records.txt
    python -m kubemr.datagen join --size 100MB --output join/

The same seed and size always give the same bytes, so benchmarks compare like with like.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import string

from kubemr.sizes import parse_size

_LETTERS = "etaoinshrdlcumwfgypbvkjxqz"


def _vocabulary(rng: random.Random, size: int) -> list[str]:
    words = set()
    while len(words) < size:
        length = max(1, min(14, int(rng.gammavariate(2.2, 2.3))))
        words.add("".join(rng.choices(_LETTERS, k=length)))
    return sorted(words, key=lambda w: (len(w), w))


def zipf_text(path: str, size: int, seed: int = 42, vocabulary: int = 200_000) -> None:
    """Lines of Zipf-distributed words (exponent ~1), about ``size`` bytes."""
    rng = random.Random(seed)
    vocab = _vocabulary(rng, vocabulary)
    weights = list(itertools.accumulate(1.0 / (rank + 1) for rank in range(len(vocab))))
    # A pool of lines, then lines drawn from the pool: fast, and word frequencies stay Zipf.
    pool = []
    for _ in range(50_000):
        n = rng.randint(4, 16)
        pool.append(" ".join(rng.choices(vocab, cum_weights=weights, k=n)) + "\n")
    _write_lines(path, size, pool, rng)


def _write_lines(path: str, size: int, pool: list[str], rng: random.Random) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    written = 0
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        while written < size:
            block = "".join(rng.choices(pool, k=20_000))
            if written + len(block) > size:
                cut = block.rfind("\n", 0, size - written) + 1
                block = block[:cut] if cut > 0 else block[: block.find("\n") + 1]
            fh.write(block)
            written += len(block)


_PRINTABLE = (string.ascii_letters + string.digits + string.punctuation + " ").encode()
_TO_PRINTABLE = bytes(_PRINTABLE[b % len(_PRINTABLE)] for b in range(256))


def sort_records(path: str, size: int, seed: int = 42) -> None:
    """gensort-style 100-byte lines: a 10-byte printable key, a row id and filler."""
    rng = random.Random(seed)
    count = size // 100
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="ascii", newline="\n") as fh:
        row = 0
        while row < count:
            n = min(50_000, count - row)
            keys = rng.randbytes(10 * n).translate(_TO_PRINTABLE).decode("ascii")
            lines = []
            for i in range(n):
                rid = row + i
                filler = _LETTERS[rid % 26].upper() * 52
                lines.append(f"{keys[i * 10 : i * 10 + 10]}  {rid:032X}  {filler[:52]}\n")
            fh.write("".join(lines))
            row += n


COUNTRIES = ["US", "DE", "FR", "JP", "BR", "IN", "GB", "ES", "IT", "CA", "NL", "SE", "PL", "KR"]


def join_tables(directory: str, size: int, seed: int = 42) -> None:
    """``users.csv`` (user_id,country) and ``events.jsonl`` ({user_id, amount})."""
    rng = random.Random(seed)
    os.makedirs(directory, exist_ok=True)
    users = max(1000, size // 2000)
    with open(os.path.join(directory, "users.csv"), "w", newline="\n") as fh:
        fh.write("user_id,country\n")
        fh.write("".join(f"u{u},{rng.choice(COUNTRIES)}\n" for u in range(users)))
    events = size // 40
    with open(os.path.join(directory, "events.jsonl"), "w", newline="\n") as fh:
        done = 0
        while done < events:
            n = min(100_000, events - done)
            fh.write(
                "".join(
                    json.dumps(
                        {"user_id": f"u{rng.randrange(users)}", "amount": rng.randrange(1, 10_000)}
                    )
                    + "\n"
                    for _ in range(n)
                )
            )
            done += n


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m kubemr.datagen", description=__doc__)
    parser.add_argument("kind", choices=["text", "sort", "join"])
    parser.add_argument("--size", default="100MB")
    parser.add_argument("--output", required=True)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    size = parse_size(args.size)
    if args.kind == "text":
        zipf_text(args.output, size, args.seed)
    elif args.kind == "sort":
        sort_records(args.output, size, args.seed)
    else:
        join_tables(args.output, size, args.seed)


if __name__ == "__main__":
    main()
