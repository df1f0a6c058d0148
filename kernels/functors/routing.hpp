#pragma once
// The router gradient of one task in one lego layer, for host and device (kernels/routing.hpp).
#include <cstdint>

#include "core/hd.hpp"

namespace gppf::kernels {

// Legos of a layer and entries of a route (shared legos included) that a route's values carry by
// value into the kernel: no host-to-device copy, which from pageable memory would wait for the GPU.
inline constexpr int kMaxRouteEntries = 64;

struct RouterGradFunctor {
  const float* dgate;  // [entries]: d loss / d gate of each route entry; null: `extra` only
  float* dz;           // [legos]
  bool accumulate;
  int entries;
  int routed[kMaxRouteEntries];   // each entry's router index, -1 for a shared lego
  float probs[kMaxRouteEntries];  // softmax over the layer's router logits
  float extra[kMaxRouteEntries];  // with dgate null: the values added to dz
  // Non-null: the probabilities read from memory ([legos] f32 on dz's device, the step's route
  // table) instead of `probs`, so that a captured graph replays with the values then in memory.
  const float* probs_at;

  GPPF_HD float prob(std::int64_t i) const { return probs_at ? probs_at[i] : probs[i]; }

  // Gates p_i at the selected legos S: dz_i = p_i (D_i - sum_{j in S} p_j D_j), D_i = d loss / d p_i on
  // S and 0 elsewhere; in double, in the route's order (the host's results do not move with it).
  GPPF_HD void operator()(std::int64_t i) const {
    float v = extra[i];
    if (dgate) {
      double inner = 0, d = 0;
      for (int j = 0; j < entries; ++j) {
        if (routed[j] < 0) continue;
        inner += static_cast<double>(prob(routed[j])) * dgate[j];
        if (routed[j] == i) d = dgate[j];
      }
      v = static_cast<float>(static_cast<double>(prob(i)) * (d - inner));
    }
    dz[i] = (accumulate ? dz[i] : 0.0f) + v;
  }
};

}  // namespace gppf::kernels
