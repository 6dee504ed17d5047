#!/usr/bin/env bash
# Total sort with coreutils: byte order of the first 10 characters, stable.
# Usage: sort.sh INPUT OUTPUT_DIR WORKERS
set -euo pipefail
mkdir -p "$2"
LC_ALL=C sort --parallel="$3" -S 4G -s -t $'\t' -k1.1,1.10 "$1" > "$2/result.txt"
