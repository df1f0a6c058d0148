#!/usr/bin/env bash
# clang-format over the C++ sources: `scripts/format.sh` rewrites every tracked and new source file,
# `scripts/format.sh FILE...` only those (others may be mid-edit by someone else; arguments that are
# not .hpp/.cpp/.cu/.cuh are skipped), and
# `scripts/format.sh --check [FILE...]` fails on a diff.
set -euo pipefail
here=$(pwd)
cd "$(dirname "$0")/.."
check=0
if [ "${1:-}" = "--check" ]; then
  check=1
  shift
fi
if [ $# -gt 0 ]; then
  files=()
  for f in "$@"; do
    # Only C++/CUDA sources: clang-format would rewrite a Markdown or YAML file as if it were C++.
    case "$f" in *.hpp | *.cpp | *.cu | *.cuh) ;; *) continue ;; esac
    case "$f" in /*) files+=("$f") ;; *) files+=("$here/$f") ;; esac
  done
else
  mapfile -t files < <(git ls-files --cached --others --exclude-standard -- '*.hpp' '*.cpp' '*.cu' '*.cuh')
fi
[ ${#files[@]} -gt 0 ] || exit 0
if [ $check = 1 ]; then
  clang-format --dry-run --Werror "${files[@]}"
  echo "format: ${#files[@]} files clean"
else
  clang-format -i "${files[@]}"
fi
