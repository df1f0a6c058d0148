#!/usr/bin/env bash
# Builds and runs one libFuzzer target (docs/DEVELOPING.md, "Fuzzing").
#   scripts/fuzz.sh TARGET SECONDS [libFuzzer flags...]
# TARGET: image manifest config shard coco checkpoint. The corpus grows in build-fuzz/corpus/TARGET
# from the seeds of scripts/fuzz-corpus.sh; a crashing input lands in build-fuzz/findings/TARGET/;
# copy it to fuzz/regressions/TARGET/ with the fix (the ctest fuzz.regressions replays it).
# Build: clang, ASan + UBSan, libFuzzer coverage on the whole library, in build-fuzz (one full
# build). GPPF_FUZZ_QUICK=1 instead instruments only the readers (io/, config, checkpoint) and the
# targets, links them with the library of the normal build (build/, scripts/build.sh) and needs
# minutes, not an hour, on a small machine: what the rest of the library does is then unchecked.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: scripts/fuzz.sh TARGET SECONDS [libFuzzer flags...]}
seconds=${2:?usage: scripts/fuzz.sh TARGET SECONDS [libFuzzer flags...]}
shift 2
case $target in image | manifest | config | shard | coco | checkpoint) ;;
  *) echo "fuzz.sh: unknown target '$target' (image manifest config shard coco checkpoint)" >&2; exit 2 ;;
esac
out=build-fuzz
export CCACHE_BASEDIR=$PWD

quick_build() {  # $1: the libFuzzer binary to make
  local lib_build=${GPPF_FUZZ_LIB_BUILD:-build} objs=() src obj
  [ -f "$lib_build/libgppf_train.a" ] || { echo "fuzz.sh: $lib_build/libgppf_train.a missing: run scripts/build.sh first" >&2; exit 1; }
  mkdir -p "$out/quick"
  # The normal build's compile line for a library source, with clang and the fuzzing flags.
  local flags
  flags=$(python3 - "$lib_build" <<'EOF'
import json, shlex, sys
for c in json.load(open(sys.argv[1] + "/compile_commands.json")):
    if c["file"].endswith("/io/dataset.cpp"):
        args = shlex.split(c["command"])[1:]
        keep, skip = [], False
        for a in args:
            if skip: skip = False; continue
            if a in ("-o", "-c", "-MF", "-MT"): skip = True; continue
            if a in ("-MD",) or a.startswith("-O") or a.startswith("-fopenmp") or a.endswith("/io/dataset.cpp"): continue
            if a.startswith("-I") and not a.startswith("-I/"): a = "-I" + c["directory"] + "/" + a[2:]
            keep.append(a)
        print(" ".join(shlex.quote(a) for a in keep))
EOF
)
  local cxx=(ccache clang++ $flags -O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined)
  # An object is stale when its source or any header changed: a struct that grew a member in a header,
  # linked against objects of the old layout, overflows the stack (ccache makes rebuilding cheap).
  local newest_header
  newest_header=$(find core io src kernels fuzz -name '*.hpp' -printf '%T@ %p\n' | sort -n | tail -1 | cut -d' ' -f2)
  for src in fuzz/targets.cpp fuzz/seeds.cpp io/image_codec.cpp io/dataset.cpp io/h5.cpp io/convert_coco.cpp \
    io/coco_mask.cpp io/convert_common.cpp src/train/config.cpp src/train/checkpoint_*.cpp; do
    obj=$out/quick/$(echo "$src" | tr / _).o
    objs+=("$obj")
    [ "$obj" -nt "$src" ] && [ "$obj" -nt "$newest_header" ] && continue
    while [ "$(jobs -rp | wc -l)" -ge "${GPPF_JOBS:-$(nproc)}" ]; do wait -n; done
    "${cxx[@]}" -c "$src" -o "$obj" &
  done
  while [ "$(jobs -rp | wc -l)" -gt 0 ]; do wait -n; done
  "${cxx[@]}" -DGPPF_FUZZ_TARGET="\"$target\"" -c fuzz/main_libfuzzer.cpp -o "$out/quick/main_$target.o"
  local libs
  libs=$(grep -A3 "build bin/gppf:" "$lib_build/build.ninja" | sed -n 's/^ *LINK_LIBRARIES = //p' |
    sed -E "s#(^| )(libgppf_[a-z]+\.a)#\1$lib_build/\2#g")
  clang++ -fsanitize=fuzzer,address,undefined "$out/quick/main_$target.o" "${objs[@]}" $libs -o "$1"
}

bin=$out/fuzz_$target
if [ "${GPPF_FUZZ_QUICK:-0}" = 1 ]; then
  quick_build "$bin"
else
  [ -f "$out/CMakeCache.txt" ] || CC=clang CXX=clang++ cmake -S . -B "$out" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g" -DGPPF_FUZZ=ON -DGPPF_SANITIZE=address,undefined -DGPPF_CUDA=OFF \
    -DGPPF_BUILD_TESTS=OFF -DGPPF_BUILD_BENCH=OFF
  cmake "$out" -DGPPF_FUZZ=ON >/dev/null  # also where the quick mode or an older configure came first
  cmake --build "$out" --parallel "${GPPF_JOBS:-$(nproc)}" --target "fuzz_$target" fuzz_replay
  bin=$out/fuzz/fuzz_$target
fi

[ -d "$out/seeds/$target" ] || scripts/fuzz-corpus.sh "$out/seeds"
mkdir -p "$out/corpus/$target" "$out/findings/$target"
# Leaks: HDF5 and Open MPI keep theirs until exit. A malloc of a size read from a damaged file
# returns null as it would without ASan (HDF5 checks and fails with an error). UB is a finding.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
exec "$bin" -max_total_time="$seconds" -timeout=30 -rss_limit_mb=2560 -print_final_stats=1 \
  -artifact_prefix="$out/findings/$target/" "$@" "$out/corpus/$target" "$out/seeds/$target"
