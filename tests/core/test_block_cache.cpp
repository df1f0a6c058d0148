// The caching allocator's logic (core/block_cache.hpp) on host memory: best fit, split, merge of
// free neighbours, reuse across changing sizes without asking the backend again, peak, giving free
// segments back, and the retry after the backend runs out.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <set>

#include "core/block_cache.hpp"

namespace gppf {
namespace {

struct Backend {
  std::set<void*> live;
  std::size_t limit = std::size_t(1) << 40, in_use = 0;
  std::map<void*, std::size_t> sizes;
  BlockCache make() {
    return BlockCache(
        [this](std::size_t n) -> void* {
          if (in_use + n > limit) return nullptr;
          void* p = std::malloc(n);
          live.insert(p);
          sizes[p] = n;
          in_use += n;
          return p;
        },
        [this](void* p) {
          live.erase(p);
          in_use -= sizes.at(p);
          sizes.erase(p);
          std::free(p);
        });
  }
};

TEST(BlockCache, SplitsReusesAndMergesWithoutAskingTheBackendAgain) {
  Backend be;
  {
    BlockCache c = be.make();
    // A step: activations of several sizes, freed, then the next step's other sizes.
    void* a = c.allocate(300 * 1024);
    void* b = c.allocate(500 * 1024);
    void* d = c.allocate(1000);
    EXPECT_EQ(c.stats().driver_allocs, 1u);  // one 2 MiB segment, split three ways
    EXPECT_NE(a, b);
    std::memset(a, 1, 300 * 1024);
    std::memset(b, 2, 500 * 1024);
    std::memset(d, 3, 1000);
    EXPECT_EQ(c.stats().allocated, 300 * 1024 + 500 * 1024 + 1024u);
    c.release(a);
    c.release(b);
    c.release(d);
    EXPECT_EQ(c.stats().allocated, 0u);
    EXPECT_EQ(c.stats().cached, BlockCache::kSegment);  // merged back into one free block
    void* e = c.allocate(1536 * 1024);                  // bigger than any earlier block: only merging makes room
    EXPECT_EQ(e, a);
    EXPECT_EQ(c.stats().driver_allocs, 1u);
    EXPECT_EQ(c.stats().peak, 1536 * 1024u);
    c.release(e);
    c.release(e);        // twice: ignored
    c.release(nullptr);  // not ours: ignored
    // A large request gets its own segment, and empty() gives back what is entirely free.
    void* big = c.allocate(5 * 1024 * 1024 + 1);
    EXPECT_EQ(c.stats().driver_allocs, 2u);
    EXPECT_EQ(be.live.size(), 2u);
    c.empty();
    EXPECT_EQ(be.live.size(), 1u);  // the large one is in use
    c.release(big);
    c.empty();
    EXPECT_EQ(be.live.size(), 0u);
    EXPECT_EQ(c.stats().cached, 0u);
  }
  EXPECT_TRUE(be.live.empty());
}

TEST(BlockCache, BestFitAndTheRetryAfterTheBackendRunsOut) {
  Backend be;
  BlockCache c = be.make();
  void* x = c.allocate(100 * 1024);
  void* y = c.allocate(10 * 1024);
  void* z = c.allocate(100 * 1024);
  c.release(x);  // free: 100 KiB hole, and the segment's tail
  void* w = c.allocate(60 * 1024);
  EXPECT_EQ(w, x);  // the hole fits best
  c.release(w);
  c.release(y);
  c.release(z);
  // The backend has room for one segment only: a second large one needs the cache's free one back.
  be.limit = 4 * 1024 * 1024;
  void* big = c.allocate(4 * 1024 * 1024);
  ASSERT_NE(big, nullptr);
  EXPECT_EQ(be.live.size(), 1u);  // the free 2 MiB segment was given back first
  EXPECT_EQ(c.allocate(8 * 1024 * 1024), nullptr);
  c.release(big);
}

}  // namespace
}  // namespace gppf
