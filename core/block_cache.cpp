#include "core/block_cache.hpp"

#include <algorithm>
#include <utility>
#include <vector>

namespace gppf {

BlockCache::BlockCache(RawAlloc raw_alloc, RawFree raw_free)
    : m_raw_alloc(std::move(raw_alloc)), m_raw_free(std::move(raw_free)) {}

BlockCache::~BlockCache() {
  for (const auto& [base, size] : m_segments) m_raw_free(base);
}

void BlockCache::insert_free(char* p) { m_free.insert({m_blocks.at(p).size, p}); }
void BlockCache::erase_free(char* p) { m_free.erase({m_blocks.at(p).size, p}); }

void* BlockCache::allocate(std::size_t bytes) {
  const std::size_t need = std::max<std::size_t>(kAlign, (bytes + kAlign - 1) / kAlign * kAlign);
  auto it = m_free.lower_bound({need, nullptr});
  if (it == m_free.end()) {
    const std::size_t seg = need <= kSegment ? kSegment : (need + kLargeAlign - 1) / kLargeAlign * kLargeAlign;
    auto* base = static_cast<char*>(m_raw_alloc(seg));
    if (!base) {  // give the free segments back and try once more
      empty();
      base = static_cast<char*>(m_raw_alloc(seg));
      if (!base) return nullptr;
    }
    ++m_stats.driver_allocs;
    m_stats.cached += seg;
    m_segments[base] = seg;
    m_blocks[base] = Block{base, seg, true};
    insert_free(base);
    it = m_free.lower_bound({need, nullptr});
  }
  char* p = it->second;
  m_free.erase(it);
  Block& b = m_blocks.at(p);
  if (b.size - need >= kMinSplit) {  // the rest stays a free block of the segment
    m_blocks[p + need] = Block{b.base, b.size - need, true};
    insert_free(p + need);
    b.size = need;
  }
  b.free = false;
  m_stats.allocated += b.size;
  m_stats.cached -= b.size;
  m_stats.peak = std::max(m_stats.peak, m_stats.allocated);
  return p;
}

void BlockCache::release(void* ptr) {
  auto it = m_blocks.find(static_cast<char*>(ptr));
  if (it == m_blocks.end() || it->second.free) return;
  it->second.free = true;
  m_stats.allocated -= it->second.size;
  m_stats.cached += it->second.size;
  // Merge with the next and the previous block when they are free parts of the same segment.
  auto next = std::next(it);
  if (next != m_blocks.end() && next->second.free && next->second.base == it->second.base) {
    erase_free(next->first);
    it->second.size += next->second.size;
    m_blocks.erase(next);
  }
  if (it != m_blocks.begin()) {
    auto prev = std::prev(it);
    if (prev->second.free && prev->second.base == it->second.base) {
      erase_free(prev->first);
      prev->second.size += it->second.size;
      m_blocks.erase(it);
      it = prev;
    }
  }
  insert_free(it->first);
}

void BlockCache::empty() {
  std::vector<char*> whole;
  for (const auto& [base, size] : m_segments) {
    const Block& b = m_blocks.at(base);
    if (b.free && b.size == size) whole.push_back(base);
  }
  for (char* base : whole) {
    erase_free(base);
    m_blocks.erase(base);
    m_stats.cached -= m_segments.at(base);
    m_segments.erase(base);
    m_raw_free(base);
  }
}

}  // namespace gppf
