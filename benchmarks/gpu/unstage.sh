#!/usr/bin/env bash
# Undo benchmarks/gpu/stage.sh: the index back to HEAD (the files were never touched) and the exclude lines
# removed. gpu/ is left for a later stage.sh (delete it when done).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
git reset -q
if [ -f .git/info/exclude ]; then
    sed -i '/^# uhrseg gpu staging/,/^# end uhrseg gpu staging/d' .git/info/exclude
fi
git status --short
