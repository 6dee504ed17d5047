#!/usr/bin/env bash
# Word count with coreutils: one word per line, sort, count runs.
# Usage: wordcount.sh INPUT OUTPUT_DIR WORKERS
set -euo pipefail
mkdir -p "$2"
tr -s ' \n' '\n\n' < "$1" | LC_ALL=C sort --parallel="$3" -S 4G | uniq -c > "$2/result.txt"
