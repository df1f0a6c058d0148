#pragma once
// The caching allocator's logic, apart from the memory it manages (core/cuda/runtime.cpp gives it
// cudaMalloc and cudaFree; tests give it malloc): segments come from the backend and are cut into
// blocks. A request takes the smallest free block that holds it, split when the rest is worth keeping;
// a freed block merges with free neighbours of its segment, so that a training step whose activations
// change size (routing, tasks of other input sizes) reuses the memory instead of asking the driver
// again. Not thread-safe: the caller locks.
#include <cstddef>
#include <functional>
#include <map>
#include <set>

namespace gppf {

struct BlockCacheStats {
  std::size_t allocated = 0;      // bytes handed out now (rounded sizes)
  std::size_t cached = 0;         // bytes of segments not handed out
  std::size_t peak = 0;           // most bytes handed out at once
  std::size_t driver_allocs = 0;  // segments asked of the backend
};

class BlockCache {
 public:
  // raw_alloc returns nullptr when the backend is out of memory; the cache then gives back every
  // free segment and asks once more.
  using RawAlloc = std::function<void*(std::size_t)>;
  using RawFree = std::function<void(void*)>;
  BlockCache(RawAlloc raw_alloc, RawFree raw_free);
  ~BlockCache();
  BlockCache(const BlockCache&) = delete;
  BlockCache& operator=(const BlockCache&) = delete;

  // nullptr when the backend has no memory even after the cache gave its free segments back.
  void* allocate(std::size_t bytes);
  // Ignores pointers it did not hand out.
  void release(void* ptr);
  // Gives every segment that is entirely free back to the backend.
  void empty();
  const BlockCacheStats& stats() const { return m_stats; }

  // Requests are rounded up to kAlign; a new segment is at least kSegment (large requests get their
  // own, rounded to kLargeAlign); the rest of a block is split off only when at least kMinSplit.
  static constexpr std::size_t kAlign = 512;
  static constexpr std::size_t kSegment = std::size_t(2) << 20;
  static constexpr std::size_t kLargeAlign = std::size_t(2) << 20;
  static constexpr std::size_t kMinSplit = 512;

 private:
  struct Block {
    char* base = nullptr;  // its segment's start
    std::size_t size = 0;
    bool free = true;
  };
  void insert_free(char* p);
  void erase_free(char* p);

  RawAlloc m_raw_alloc;
  RawFree m_raw_free;
  std::map<char*, Block> m_blocks;                 // every block by address
  std::set<std::pair<std::size_t, char*>> m_free;  // free blocks by (size, address): best fit
  std::map<char*, std::size_t> m_segments;         // segment start -> size
  BlockCacheStats m_stats;
};

}  // namespace gppf
