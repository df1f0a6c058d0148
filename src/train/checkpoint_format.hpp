#pragma once
// The HDF5 layout of one checkpoint file (docs/CHECKPOINT_FORMAT.md, "Layout"): tensors with their
// CRC-32, metadata attributes and checksums, the shard index. Internal to the checkpoint code: no
// MPI, no renames, no directory listing.
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.hpp"
#include "io/h5.hpp"
#include "src/train/checkpoint.hpp"

namespace gppf::train::ckpt {

inline constexpr const char* kFormatName = "gppf-checkpoint";
inline constexpr const char* kGroups[] = {"params", "buffers", "optimizer"};
// Errors while reading that are not damage (the file is fine, it just does not fit) carry this
// text and pass through the "damaged" wrapper unchanged.
inline constexpr const char* kMismatch = "does not fit";

std::uint32_t crc_of(const void* data, std::size_t n);
// A dataset's stored `crc32` attribute.
std::uint32_t get_crc(const io::h5::Dataset& ds);
// Link names of a group, in HDF5's name order.
std::vector<std::string> children(const io::h5::Group& g);
// Reads dataset `name` of `g` into a new host tensor, checking its checksum.
Tensor read_tensor(const io::h5::Group& g, const std::string& name);
// A scalar fixed-length string dataset (free text that may outgrow an attribute).
std::string read_text(const io::h5::Group& g, const std::string& name);
// Throws unless `f` is a gppf checkpoint of a format version this build reads.
void check_format(const io::h5::File& f);

// Writes one rank's file: rank 0's is the main file (metadata, its tensors), rank r > 0's a shard
// (its tensors, meta.rank_rng[r]). A shard is marked complete; a main file only with
// `complete_main` (one rank: no index to add), else publishing completes it after adding the index.
void write_rank_file(const std::string& path, std::int64_t step, int rank, int world, const CheckpointMeta& meta,
                     const CheckpointTensors& tensors, bool complete_main);
// Opens a main file and reads its metadata into `meta` (format, completeness, checksum checked).
io::h5::File open_main(const std::string& path, CheckpointMeta& meta);

// The main file's /shards index: shard_crc32 and size in bytes of every rank's file.
struct ShardIndex {
  std::vector<std::int64_t> crcs, bytes;
};
ShardIndex read_shard_index(const io::h5::File& f, int world);
// Adds the index to a main file opened for writing and marks the file complete.
void complete_with_index(const io::h5::File& f, const ShardIndex& index);
// The file's shard_crc32 recomputed from its datasets' stored checksums.
std::uint32_t recompute_digest(const io::h5::File& f);

}  // namespace gppf::train::ckpt
