#!/usr/bin/env bash
# Run HERE (not on the device) before the GPU session's `run` calls: copies what the session needs into gpu/
# (ignored) and takes the heavy tracked folders out of the git index, so that what travels to the device fits
# its 64 MiB (the tracked tree alone is about 96 MB, most of it packaged weights and report tables).
# Undo with benchmarks/gpu/unstage.sh right after the last `run`; never commit while staged.
# Then: run(command="bash benchmarks/gpu/session.sh all 240", carry=["gpu", "src/uhrseg/weights/pcnet.pt",
#       "src/uhrseg/weights/scn.pt"], timeout_s=590)   (benchmarks/README.md, "A session that is lent a GPU")
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
SHARED=${SHARED:-../shared}
HEAVY="src/uhrseg/weights docs/results benchmarks/weights docs/images"
if ! git diff --cached --quiet; then
    echo "stage.sh: the index holds staged changes; commit or unstage them first" >&2
    exit 1
fi
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
    echo "stage.sh: note: uncommitted changes travel too (the working tree is sent, not HEAD)" >&2
fi
exclude=.git/info/exclude
mkdir -p .git/info && touch "$exclude"
if ! grep -q "^# uhrseg gpu staging" "$exclude"; then
    { echo "# uhrseg gpu staging"; echo "/gpu/"; for p in $HEAVY; do echo "/$p/"; done
      echo "# end uhrseg gpu staging"; } >> "$exclude"
fi
rm -rf gpu
B=gpu/shared/datasets/BSDS500
mkdir -p $B/images/test $B/groundTruth gpu/shared/datasets/photos gpu/wheels
cp -r "$SHARED"/datasets/BSDS500/images/train "$SHARED"/datasets/BSDS500/images/val $B/images/
cp -r "$SHARED"/datasets/BSDS500/groundTruth/train "$SHARED"/datasets/BSDS500/groundTruth/val $B/groundTruth/
find "$SHARED"/datasets/BSDS500/images/test -name '*.jpg' | sort | head -20 | xargs cp -t $B/images/test/
for f in kite-2560x1600.jpg shell-5120x2880.jpg volna-5120x2880.jpg; do
    cp "$SHARED/datasets/photos/$f" gpu/shared/datasets/photos/
done
# What the device's image lacks (it has torch, numba, scikit-image, tifffile, OpenCV): Python 3.12 wheels. No
# imagecodecs (28 MB): bench_superpixels then writes the 10K / 20K mosaics with uncompressed tiles.
pip download -q --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 -d gpu/wheels tqdm lazy_loader "zarr>=2.16"
# keep only what the image lacks (device README, KINDS.md): its numpy (torch was built against it), tqdm,
# lazy_loader, packaging, PyYAML and typing_extensions stay in use
for w in numpy packaging pyyaml typing_extensions tqdm lazy_loader; do rm -f gpu/wheels/"$w"-*.whl; done
git rm -r -q --cached $HEAVY
tracked=$(git ls-files -z | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
others=$(git ls-files -z --others --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
carried=$(du -cb gpu src/uhrseg/weights/pcnet.pt src/uhrseg/weights/scn.pt | tail -1 | cut -f1)
total=$(( ${tracked:-0} + ${others:-0} + carried ))
echo "travels: tracked $((tracked / 1048576)) MiB + untracked $((${others:-0} / 1048576)) MiB +" \
     "carried $((carried / 1048576)) MiB = $((total / 1048576)) MiB of 64"
[ "$total" -lt $((64 * 1048576)) ] || { echo "stage.sh: over 64 MiB" >&2; exit 1; }
