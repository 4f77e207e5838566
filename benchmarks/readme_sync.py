"""Copy the speed summary from docs/benchmarks.md into README.md, so each figure lives in one place.

    python -m benchmarks.readme_sync           # rewrite README's block from docs/benchmarks.md
    python -m benchmarks.readme_sync --check   # exit 1 when README's block differs (tests/test_docs.py)

The block is the text between `<!-- speed-summary:start -->` and `<!-- speed-summary:end -->` in both
files. docs/benchmarks.md holds the measurements with their commands; the README quotes the summary
verbatim rather than restating figures by hand, which is how four speeds for one case crept in.
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- speed-summary:start -->", "<!-- speed-summary:end -->"


def block(text: str, name: str) -> tuple[int, int]:
    """(start, end) character offsets of the text between the markers in `text`."""
    if text.count(START) != 1 or text.count(END) != 1:
        raise ValueError(f"{name} must hold {START} and {END} exactly once each")
    start, end = text.index(START) + len(START), text.index(END)
    if end < start:
        raise ValueError(f"{name}: {END} comes before {START}")
    return start, end


def synced(readme: str, docs: str) -> str:
    """README text with its summary block replaced by the one in docs."""
    d_start, d_end = block(docs, "docs/benchmarks.md")
    r_start, r_end = block(readme, "README.md")
    return readme[:r_start] + docs[d_start:d_end] + readme[r_end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only say whether README is in sync")
    args = parser.parse_args(argv)
    readme_path, docs_path = ROOT / "README.md", ROOT / "docs" / "benchmarks.md"
    readme = readme_path.read_text(encoding="utf-8")
    new = synced(readme, docs_path.read_text(encoding="utf-8"))
    if args.check:
        if new != readme:
            print("README.md's speed summary differs from docs/benchmarks.md: "
                  "run python -m benchmarks.readme_sync", file=sys.stderr)
            return 1
        return 0
    if new != readme:
        readme_path.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
