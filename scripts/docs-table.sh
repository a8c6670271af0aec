#!/usr/bin/env bash
# Puts a benchmark table into docs/benchmarks.md between `<!-- NAME:begin -->` and
# `<!-- NAME:end -->`, so the documented figures always come from a bench run.
#
#   scripts/docs-table.sh NAME TABLE
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python3 - "$ROOT/docs/benchmarks.md" "$1" "$2" <<'PY'
import sys
path, name, table = sys.argv[1:4]
text = open(path).read()
begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
if begin not in text or end not in text:
    sys.exit(f"docs/benchmarks.md has no {name} markers")
head, rest = text.split(begin, 1)
_, tail = rest.split(end, 1)
open(path, "w").write(f"{head}{begin}\n{table}\n{end}{tail}")
PY
