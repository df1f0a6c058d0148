#include "io/loader.hpp"

#include <algorithm>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <tuple>

#include "core/cuda_runtime.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "io/image_codec.hpp"
#include "io/random.hpp"

namespace gppf::io {

OnError parse_on_error(const std::string& name) {
  if (name == "error" || name == "fail") return OnError::Fail;
  if (name == "skip") return OnError::Skip;
  GPPF_THROW("unknown on_error policy '", name, "' (error or skip)");
}

std::string LoaderState::to_json() const {
  return nlohmann::json{{"split", split}, {"seed", seed},   {"rank", rank},
                        {"world", world}, {"epoch", epoch}, {"batch", batch}}
      .dump();
}

LoaderState LoaderState::from_json(const std::string& text) {
  try {
    const auto j = nlohmann::json::parse(text);
    LoaderState s;
    s.split = j.at("split").get<std::string>();
    s.seed = j.at("seed").get<std::uint64_t>();
    s.rank = j.at("rank").get<int>();
    s.world = j.at("world").get<int>();
    s.epoch = j.at("epoch").get<std::int64_t>();
    s.batch = j.at("batch").get<std::int64_t>();
    return s;
  } catch (const std::exception& e) {
    GPPF_THROW("loader state: cannot parse '", text, "' (", e.what(), ")");
  }
}

namespace {

struct Unit {
  int shard = 0;
  std::int64_t start = 0, count = 0;
  std::int64_t first = 0;  // split index of the unit's first sample
};

struct Plan {
  std::int64_t batches = 0;
  std::vector<std::int32_t> unit, offset;  // the rank's sample sequence for the epoch
  std::vector<std::int32_t> uses;          // per unit: samples in the batches still to be built
};

std::int64_t stored_bytes(const Sample& s) {
  return static_cast<std::int64_t>(s.image.size() + s.mask.size() + s.boxes.size() * sizeof(Box));
}

struct Block {
  bool ready = false;
  std::string error;
  std::vector<Sample> samples;
  std::vector<std::uint32_t> crc;
  std::int64_t remaining = 0;
};

struct Result {
  Batch batch;
  std::exception_ptr error;
};

struct Cancelled {};

// out = px * scale + bias per channel, written so that the compiler vectorises it.
template <int C>
void normalise_u8(const std::uint8_t* px, std::size_t npx, const InputFormat& fmt, float* dst) {
  float scale[C], bias[C];
  for (int k = 0; k < C; ++k) {
    scale[k] = fmt.inv_std[k] / 255.0f;
    bias[k] = -fmt.mean[k] * fmt.inv_std[k];
  }
  for (std::size_t i = 0; i < npx; ++i)
    for (int k = 0; k < C; ++k) dst[i * C + k] = static_cast<float>(px[i * C + k]) * scale[k] + bias[k];
}

}  // namespace

InputFormat input_format(const Manifest& m, const LoaderConfig& c, const std::string& dir) {
  InputFormat f;
  f.height = c.height > 0 ? c.height : m.height;
  f.width = c.width > 0 ? c.width : m.width;
  GPPF_CHECK(f.height > 0 && f.width > 0, "loader: data set ", dir,
             " has images of different sizes; set the output height and width");
  f.channels = c.channels > 0 ? c.channels : m.channels;
  GPPF_CHECK(f.channels == m.channels || f.channels == 1 || f.channels == 3, "loader: cannot convert ", m.channels,
             " channels into ", f.channels);
  std::vector<float> mean = c.mean, sd = c.std;
  // The manifest's statistics fit when the channels are kept, or when RGBA loses its alpha.
  if (mean.empty() && m.mean.size() >= static_cast<std::size_t>(f.channels) &&
      (f.channels == m.channels || f.channels == 3)) {
    mean.assign(m.mean.begin(), m.mean.begin() + f.channels);
    sd.assign(m.std.begin(), m.std.begin() + f.channels);
  } else if (mean.empty() && m.mean.size() == 1) {  // gray into RGB: one value for every channel
    mean = {static_cast<float>(m.mean[0])};
    sd = {static_cast<float>(m.std[0])};
  }
  if (mean.empty()) mean = {0.0f};
  if (sd.empty()) sd = {1.0f};
  GPPF_CHECK((mean.size() == 1 || mean.size() == static_cast<std::size_t>(f.channels)) &&
                 (sd.size() == 1 || sd.size() == static_cast<std::size_t>(f.channels)),
             "loader: mean/std need 1 or ", f.channels, " values");
  for (int k = 0; k < f.channels; ++k) {
    f.mean.push_back(mean[mean.size() == 1 ? 0 : k]);
    const float s = sd[sd.size() == 1 ? 0 : k];
    GPPF_CHECK(s > 0, "loader: std must be positive");
    f.inv_std.push_back(1.0f / s);
  }
  return f;
}

void write_input(const std::uint8_t* px, int h, int w, int c, const InputFormat& fmt, const Window& win,
                 const AugmentConfig& augment, Rng& rng, float* dst) {
  const int out_c = fmt.channels;
  std::vector<std::uint8_t> converted;
  if (c != out_c) {
    const std::size_t n = static_cast<std::size_t>(h) * w;
    converted.resize(n * out_c);
    for (std::size_t i = 0; i < n; ++i) {
      const std::uint8_t* p = px + i * c;
      const std::uint8_t gray =
          c == 1 ? p[0] : static_cast<std::uint8_t>((299 * p[0] + 587 * p[1] + 114 * p[2] + 500) / 1000);
      for (int k = 0; k < out_c; ++k) converted[i * out_c + k] = out_c == 1 ? gray : (c == 1 ? p[0] : p[k]);
    }
    px = converted.data();
    c = out_c;
  }
  const std::size_t npx = static_cast<std::size_t>(fmt.height) * fmt.width;
  if (!augment.enabled && h == fmt.height && w == fmt.width) {
    switch (out_c) {
      case 1: normalise_u8<1>(px, npx, fmt, dst); break;
      case 3: normalise_u8<3>(px, npx, fmt, dst); break;
      default: normalise_u8<4>(px, npx, fmt, dst);
    }
    return;
  }
  resample_image(px, h, w, c, win, 0.0f, dst);
  if (augment.enabled) colour_jitter(augment, static_cast<int>(npx), c, rng, dst);
  for (std::size_t i = 0; i < npx; ++i)
    for (int k = 0; k < out_c; ++k) {
      float& v = dst[i * out_c + k];
      v = (v * (1.0f / 255.0f) - fmt.mean[k]) * fmt.inv_std[k];
    }
}

void image_to_input(const std::uint8_t* px, int h, int w, int c, const InputFormat& fmt, float* dst) {
  const AugmentConfig off;
  Rng rng(0);  // unused: nothing is drawn with augmentation off
  const Window win = plan_window(off, h, w, fmt.height, fmt.width, rng);
  write_input(px, h, w, c, fmt, win, off, rng, dst);
}

struct Loader::Impl {
  Dataset ds;
  LoaderConfig cfg;
  std::vector<std::string> shard_paths;
  std::vector<const ShardInfo*> shard_info;
  std::vector<Unit> units;
  InputFormat fmt;
  bool pinned = false;

  std::mutex shard_mu;
  std::vector<std::unique_ptr<ShardReader>> readers;
  std::vector<std::string> shard_err;

  mutable std::mutex mu;
  std::condition_variable cv_work, cv_result, cv_block;
  bool stop = false;
  std::uint64_t generation = 0;
  std::int64_t start_epoch = 0, start_batch = 0;
  std::int64_t next_task = 0, consumed = 0;
  std::int64_t disp_epoch = 0, disp_batch = 0, cons_epoch = 0, cons_batch = 0;
  std::map<std::int64_t, Result> results;
  std::map<std::int64_t, std::shared_ptr<const Plan>> plans;
  std::map<std::pair<std::int64_t, std::int32_t>, std::shared_ptr<Block>> blocks;
  LoaderStats stats;
  std::vector<std::thread> threads;

  const Manifest& m() const { return ds.manifest(); }

  // Under mu.
  std::shared_ptr<const Plan> plan(std::int64_t epoch) {
    auto it = plans.find(epoch);
    if (it != plans.end()) return it->second;
    auto p = std::make_shared<Plan>(make_plan(epoch, epoch == start_epoch ? start_batch : 0));
    plans[epoch] = p;
    return p;
  }

  // This replica's part of the batch of `whole` samples: positions [lo, hi) within it.
  std::pair<std::int64_t, std::int64_t> part(std::int64_t whole) const {
    return {whole * cfg.share / cfg.shares, whole * (cfg.share + 1) / cfg.shares};
  }
  // Whether epoch position i (batches of b, `end` positions in all) is in this replica's part.
  bool owns(std::int64_t i, std::int64_t b, std::int64_t end) const {
    if (cfg.shares == 1) return true;
    const std::int64_t i0 = i / b * b;
    const auto [lo, hi] = part(std::min(b, end - i0));
    return i - i0 >= lo && i - i0 < hi;
  }

  Plan make_plan(std::int64_t epoch, std::int64_t first_batch) const {
    const auto nunits = static_cast<std::int64_t>(units.size());
    std::vector<std::int32_t> perm(static_cast<std::size_t>(nunits));
    for (std::int64_t i = 0; i < nunits; ++i) perm[i] = static_cast<std::int32_t>(i);
    if (cfg.shuffle) Rng(hash_seed({cfg.seed, static_cast<std::uint64_t>(epoch), 1})).shuffle(perm);
    std::vector<std::int64_t> share(static_cast<std::size_t>(cfg.world), 0);
    std::vector<std::int32_t> mine;
    for (std::int64_t p = 0; p < nunits; ++p) {
      share[p % cfg.world] += units[perm[p]].count;
      if (p % cfg.world == cfg.rank) mine.push_back(perm[p]);
    }
    Plan plan;
    const auto window = static_cast<std::size_t>(std::max(1, cfg.shuffle_window));
    std::vector<std::pair<std::int32_t, std::int32_t>> seq, part;
    for (std::size_t w0 = 0; w0 < mine.size(); w0 += window) {
      part.clear();
      for (std::size_t k = w0; k < std::min(mine.size(), w0 + window); ++k)
        for (std::int64_t o = 0; o < units[mine[k]].count; ++o)
          part.emplace_back(mine[k], static_cast<std::int32_t>(o));
      if (cfg.shuffle)
        Rng(hash_seed({cfg.seed, static_cast<std::uint64_t>(epoch), static_cast<std::uint64_t>(cfg.rank), w0, 2}))
            .shuffle(part);
      seq.insert(seq.end(), part.begin(), part.end());
    }
    std::int64_t length = static_cast<std::int64_t>(seq.size());
    if (cfg.drop_last) length = *std::min_element(share.begin(), share.end());
    const std::int64_t b = cfg.batch_size;
    plan.batches = cfg.drop_last ? length / b : (length + b - 1) / b;
    plan.unit.reserve(static_cast<std::size_t>(length));
    plan.offset.reserve(static_cast<std::size_t>(length));
    for (std::int64_t i = 0; i < length; ++i) {
      plan.unit.push_back(seq[i].first);
      plan.offset.push_back(seq[i].second);
    }
    plan.uses.assign(units.size(), 0);
    const std::int64_t end = cfg.drop_last ? plan.batches * b : length;
    for (std::int64_t i = std::min(end, first_batch * b); i < end; ++i)
      if (owns(i, b, end)) ++plan.uses[plan.unit[i]];
    return plan;
  }

  ShardReader& reader(int shard) {
    std::lock_guard<std::mutex> l(shard_mu);
    if (!shard_err[shard].empty()) GPPF_THROW(shard_err[shard]);
    if (!readers[shard]) {
      const std::string& path = shard_paths[shard];
      try {
        GPPF_CHECK(std::filesystem::exists(path), "shard ", path, " is missing");
        const auto size = static_cast<std::int64_t>(std::filesystem::file_size(path));
        GPPF_CHECK(size == shard_info[shard]->bytes, "shard ", path, " has ", size, " bytes, the manifest says ",
                   shard_info[shard]->bytes, " (truncated or replaced)");
        readers[shard] = std::make_unique<ShardReader>(path, m(), shard_info[shard]->count);
      } catch (const Error& e) {
        shard_err[shard] = e.reason();
        throw;
      }
    }
    return *readers[shard];
  }

  // The block of unit u, read now (its bytes added to *bytes) or by another batch before.
  std::shared_ptr<Block> acquire(std::uint64_t gen, std::int64_t epoch, const Plan& plan, std::int32_t u,
                                 std::int64_t* bytes) {
    std::unique_lock<std::mutex> l(mu);
    if (gen != generation || stop) throw Cancelled{};
    const auto key = std::make_pair(epoch, u);
    auto it = blocks.find(key);
    if (it != blocks.end()) {
      auto blk = it->second;
      cv_block.wait(l, [&] { return blk->ready || stop; });
      if (stop) throw Cancelled{};
      return blk;
    }
    auto blk = std::make_shared<Block>();
    blk->remaining = plan.uses[u];
    blocks[key] = blk;
    l.unlock();
    const Unit& un = units[u];
    try {
      reader(un.shard).read(un.start, un.count, blk->samples, blk->crc);
      for (const Sample& s : blk->samples) *bytes += stored_bytes(s);
    } catch (const Error& e) {
      blk->error = e.reason();
    }
    l.lock();
    blk->ready = true;
    cv_block.notify_all();
    return blk;
  }

  void release(std::uint64_t gen, std::int64_t epoch, std::int32_t u, std::int64_t n) {
    std::lock_guard<std::mutex> l(mu);
    if (gen != generation) return;
    auto it = blocks.find({epoch, u});
    if (it != blocks.end() && (it->second->remaining -= n) <= 0) blocks.erase(it);
  }

  Tensor alloc(const Shape& shape, DType dtype) const { return Tensor::empty(shape, dtype, Device::host(), pinned); }

  // Decodes, augments and normalises one sample into slot `slot` of the batch tensors.
  void process(const Sample& s, std::uint32_t crc, const std::string& what, std::int64_t epoch, std::int64_t index,
               std::int64_t slot, Batch& b) const {
    const Manifest& man = m();
    GPPF_CHECK(sample_crc(s) == crc, what, ": CRC-32 mismatch (corrupt data)");
    validate_sample(man, s, what);
    thread_local Image decoded;  // reused: no allocation per sample
    const std::uint8_t* px = s.image.data();
    const int h = s.height, w = s.width;
    if (!man.raw()) {
      decode_image_into(s.image.data(), s.image.size(), man.channels, what, decoded);
      GPPF_CHECK(decoded.height == h && decoded.width == w, what, ": decoded ", decoded.height, "x", decoded.width,
                 ", stored shape says ", h, "x", w);
      px = decoded.pixels.data();
    }
    Rng rng(hash_seed({cfg.seed, static_cast<std::uint64_t>(epoch), static_cast<std::uint64_t>(index), 0xa06}));
    const Window win = plan_window(cfg.augment, h, w, fmt.height, fmt.width, rng);
    const bool identity = !cfg.augment.enabled && h == fmt.height && w == fmt.width;
    const std::size_t npx = static_cast<std::size_t>(fmt.height) * fmt.width;
    write_input(px, h, w, s.channels, fmt, win, cfg.augment, rng,
                b.images.data_as<float>() + slot * npx * fmt.channels);
    b.labels.data_as<std::int32_t>()[slot] = s.label;
    if (man.has_boxes) b.boxes.push_back(transform_boxes(s.boxes, win, cfg.augment.min_box_visible));
    if (man.has_masks) {
      thread_local Image mdec;
      const std::uint8_t* mp = s.mask.data();
      if (!man.raw()) {
        decode_image_into(s.mask.data(), s.mask.size(), 1, what + " (mask)", mdec);
        GPPF_CHECK(mdec.height == h && mdec.width == w, what, ": mask is ", mdec.height, "x", mdec.width, ", image ", h,
                   "x", w);
        mp = mdec.pixels.data();
      }
      std::int32_t* md = b.masks.data_as<std::int32_t>() + slot * npx;
      if (identity)
        for (std::size_t i = 0; i < npx; ++i) md[i] = mp[i];
      else
        resample_mask(mp, h, w, win, md);
    }
  }

  // Batch tensors for n samples.
  Batch empty_batch(std::int64_t epoch, std::int64_t bi, std::int64_t n) const {
    Batch b;
    b.epoch = epoch;
    b.index = bi;
    b.images = alloc({n, fmt.height, fmt.width, fmt.channels}, DType::F32);
    b.labels = alloc({n}, DType::I32);
    if (m().has_masks) b.masks = alloc({n, fmt.height, fmt.width}, DType::I32);
    return b;
  }

  // Drops the unused tail of the batch tensors (samples skipped by the skip policy).
  static void trim(Batch& b, std::int64_t n) {
    if (b.size() == n) return;
    b.images = b.images.narrow0(0, b.size());
    b.labels = b.labels.narrow0(0, b.size());
    if (b.masks.defined()) b.masks = b.masks.narrow0(0, b.size());
  }

  // Batch bi, or this replica's part of it. Raw data sets are chunked and deflated by blocks, so
  // samples come from whole blocks (read once, shared by the batches that use them); encoded ones
  // are contiguous bytes, so a replica reads its samples one by one and nothing else.
  Batch build(const Plan& plan, std::int64_t epoch, std::int64_t bi, std::uint64_t gen) {
    const std::int64_t bs = cfg.batch_size;
    const std::int64_t whole = std::min<std::int64_t>(bs, static_cast<std::int64_t>(plan.unit.size()) - bi * bs);
    GPPF_CHECK(whole % cfg.shares == 0, "loader: a batch of ", whole, " samples of split '", cfg.split,
               "' does not split into ", cfg.shares, " replicas");
    const auto [lo, hi] = part(whole);
    const std::int64_t i0 = bi * bs + lo, n = hi - lo;
    const bool by_sample = cfg.shares > 1 && !m().raw();
    Batch b = empty_batch(epoch, bi, n);
    std::vector<std::pair<std::int32_t, std::int64_t>> used;
    auto release_all = [&] {
      for (auto& [u, k] : used) release(gen, epoch, u, k);
    };
    std::vector<Sample> one;
    std::vector<std::uint32_t> one_crc;
    try {
      for (std::int64_t i = 0; i < n; ++i) {
        const std::int32_t u = plan.unit[i0 + i], off = plan.offset[i0 + i];
        const Unit& un = units[u];
        const std::int64_t index = un.first + off;
        const std::string what = str("shard ", shard_paths[un.shard], " sample ", un.start + off);
        std::shared_ptr<Block> blk;
        std::string error;
        if (by_sample) {
          try {
            reader(un.shard).read(un.start + off, 1, one, one_crc);
            b.bytes_read += stored_bytes(one[0]);
          } catch (const Error& e) {
            error = e.reason();
          }
        } else {
          if (used.empty() || used.back().first != u) used.emplace_back(u, 0);
          ++used.back().second;
          blk = acquire(gen, epoch, plan, u, &b.bytes_read);
          error = blk->error;
        }
        try {
          if (!error.empty()) GPPF_THROW(what, ": unreadable (", error, ")");
          if (by_sample)
            process(one[0], one_crc[0], what, epoch, index, b.size(), b);
          else
            process(blk->samples[off], blk->crc[off], what, epoch, index, b.size(), b);
          b.ids.push_back(index);
        } catch (const Error& e) {
          if (cfg.on_error == OnError::Fail) throw;
          ++b.skipped;
          b.skip_reasons.push_back(e.reason());
        }
      }
    } catch (...) {
      release_all();
      throw;
    }
    release_all();
    trim(b, n);
    return b;
  }

  bool can_dispatch() const { return cfg.repeat || disp_epoch == start_epoch; }

  void worker() {
    std::unique_lock<std::mutex> l(mu);
    while (true) {
      cv_work.wait(l, [&] { return stop || (can_dispatch() && next_task < consumed + cfg.prefetch); });
      if (stop) return;
      const std::int64_t t = next_task++, epoch = disp_epoch, bi = disp_batch;
      const std::uint64_t gen = generation;
      const auto p = plan(epoch);
      if (++disp_batch >= p->batches) {
        ++disp_epoch;
        disp_batch = 0;
      }
      l.unlock();
      Result r;
      bool cancelled = false;
      try {
        r.batch = build(*p, epoch, bi, gen);
      } catch (const Cancelled&) {
        cancelled = true;
      } catch (...) {
        r.error = std::current_exception();
      }
      l.lock();
      if (cancelled || gen != generation) continue;
      results[t] = std::move(r);
      cv_result.notify_all();
    }
  }

  void reset(std::int64_t epoch, std::int64_t batch) {
    ++generation;
    results.clear();
    plans.clear();
    blocks.clear();
    start_epoch = disp_epoch = cons_epoch = epoch;
    start_batch = disp_batch = cons_batch = batch;
    next_task = consumed = 0;
    const auto p = plan(epoch);
    GPPF_CHECK(p->batches > 0, "loader: split '", cfg.split, "' of ", ds.dir(), " gives rank ", cfg.rank, " of ",
               cfg.world, " no full batch of ", cfg.batch_size, " in epoch ", epoch);
    GPPF_CHECK(batch >= 0 && batch <= p->batches, "loader: batch ", batch, " is past the end of epoch ", epoch, " (",
               p->batches, " batches)");
    if (batch == p->batches) {
      start_epoch = disp_epoch = cons_epoch = epoch + 1;
      start_batch = disp_batch = cons_batch = 0;
      plans.clear();
    }
  }
};

Loader::Loader(const Dataset& dataset, const LoaderConfig& config) : m_impl(std::make_unique<Impl>()) {
  Impl& im = *m_impl;
  im.ds = dataset;
  im.cfg = config;
  const Manifest& m = im.ds.manifest();
  const LoaderConfig& c = im.cfg;
  GPPF_CHECK(c.batch_size > 0 && c.workers > 0 && c.prefetch > 0,
             "loader: batch_size, workers and prefetch must be "
             "positive (got ",
             c.batch_size, ", ", c.workers, ", ", c.prefetch, ")");
  GPPF_CHECK(c.world > 0 && c.rank >= 0 && c.rank < c.world, "loader: rank ", c.rank, " of world ", c.world);
  GPPF_CHECK(c.shares > 0 && c.share >= 0 && c.share < c.shares && c.batch_size % c.shares == 0, "loader: share ",
             c.share, " of ", c.shares, " of a batch of ", c.batch_size, " (the batch must split evenly)");
  const SplitInfo& split = m.split(c.split, "data set " + im.ds.dir());
  im.fmt = input_format(m, c, im.ds.dir());
  im.pinned = c.pinned && cuda::available();
  std::int64_t first = 0;
  for (const ShardInfo& sh : split.shards) {
    const int s = static_cast<int>(im.shard_paths.size());
    im.shard_paths.push_back(im.ds.shard_path(sh));
    im.shard_info.push_back(&sh);
    for (std::int64_t st = 0; st < sh.count; st += m.block)
      im.units.push_back({s, st, std::min(m.block, sh.count - st), first + st});
    first += sh.count;
  }
  im.readers.resize(im.shard_paths.size());
  im.shard_err.resize(im.shard_paths.size());
  if (c.on_error == OnError::Fail)  // fail early on a missing or truncated shard
    for (std::size_t s = 0; s < im.shard_paths.size(); ++s) im.reader(static_cast<int>(s));
  {
    std::lock_guard<std::mutex> l(im.mu);
    im.reset(0, 0);
  }
  for (int t = 0; t < c.workers; ++t) im.threads.emplace_back([&im] { im.worker(); });
}

Loader::~Loader() {
  {
    std::lock_guard<std::mutex> l(m_impl->mu);
    m_impl->stop = true;
  }
  m_impl->cv_work.notify_all();
  m_impl->cv_block.notify_all();
  for (auto& t : m_impl->threads) t.join();
}

bool Loader::next(Batch& out) {
  Impl& im = *m_impl;
  std::unique_lock<std::mutex> l(im.mu);
  if (!im.cfg.repeat && im.cons_epoch != im.start_epoch) return false;
  im.cv_result.wait(l, [&] { return im.results.count(im.consumed) > 0; });
  Result r = std::move(im.results[im.consumed]);
  im.results.erase(im.consumed);
  ++im.consumed;
  if (++im.cons_batch >= im.plan(im.cons_epoch)->batches) {
    ++im.cons_epoch;
    im.cons_batch = 0;
    im.plans.erase(im.plans.begin(), im.plans.lower_bound(im.cons_epoch - 1));
  }
  im.cv_work.notify_all();
  if (r.error) std::rethrow_exception(r.error);
  ++im.stats.batches;
  im.stats.samples += r.batch.size();
  im.stats.skipped += r.batch.skipped;
  im.stats.bytes_read += r.batch.bytes_read;
  for (const auto& why : r.batch.skip_reasons) {
    if (im.stats.skip_reasons.size() < 100) im.stats.skip_reasons.push_back(why);
    log::warn("loader: skipped ", why);
  }
  out = std::move(r.batch);
  return true;
}

Batch Loader::next() {
  Batch b;
  GPPF_CHECK(next(b), "loader: the single epoch of split '", m_impl->cfg.split, "' is over (repeat is off)");
  return b;
}

std::int64_t Loader::epoch() const {
  std::lock_guard<std::mutex> l(m_impl->mu);
  return m_impl->cons_epoch;
}

std::int64_t Loader::batches_per_epoch(std::int64_t epoch) const {
  std::lock_guard<std::mutex> l(m_impl->mu);
  return m_impl->make_plan(epoch, 0).batches;
}

LoaderState Loader::state() const {
  std::lock_guard<std::mutex> l(m_impl->mu);
  const LoaderConfig& c = m_impl->cfg;
  return {c.split, c.seed, c.rank, c.world, m_impl->cons_epoch, m_impl->cons_batch};
}

void Loader::restore(const LoaderState& s) {
  Impl& im = *m_impl;
  const LoaderConfig& c = im.cfg;
  GPPF_CHECK(s.split == c.split && s.seed == c.seed && s.rank == c.rank && s.world == c.world,
             "loader: cannot restore a position of split ", s.split, ", seed ", s.seed, ", rank ", s.rank, "/", s.world,
             " into a loader of split ", c.split, ", seed ", c.seed, ", rank ", c.rank, "/", c.world,
             " (the order would differ)");
  {
    std::lock_guard<std::mutex> l(im.mu);
    im.reset(s.epoch, s.batch);
  }
  im.cv_block.notify_all();
  im.cv_work.notify_all();
}

LoaderStats Loader::stats() const {
  std::lock_guard<std::mutex> l(m_impl->mu);
  return m_impl->stats;
}

const Manifest& Loader::manifest() const { return m_impl->ds.manifest(); }
int Loader::height() const { return m_impl->fmt.height; }
int Loader::width() const { return m_impl->fmt.width; }
int Loader::channels() const { return m_impl->fmt.channels; }

}  // namespace gppf::io
