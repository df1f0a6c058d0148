#include "src/train/checkpoint.hpp"

// Saving: each rank's write phase, then the collective publish phase in which the ranks agree on
// success and rank 0 publishes (docs/CHECKPOINT_FORMAT.md, "Where checkpoints live").
#include <algorithm>
#include <array>
#include <cstring>
#include <filesystem>

#include "core/error.hpp"
#include "io/h5.hpp"
#include "src/dist/mpi.hpp"
#include "src/train/checkpoint_files.hpp"
#include "src/train/checkpoint_format.hpp"
#include "src/train/checkpoint_publish.hpp"

namespace gppf::train {
namespace {

namespace fs = std::filesystem;
namespace h5 = io::h5;
using namespace ckpt;

// What a rank's finished write left behind: its shard_crc32 and size. Throws when it is missing,
// unfinished or not this rank's.
std::array<std::int64_t, 2> written_file(const fs::path& tmp, std::int64_t step, int rank, int world) {
  std::error_code ec;
  GPPF_CHECK(fs::exists(tmp, ec), tmp.string(), " is missing (the write failed or did not run)");
  std::int64_t crc = 0;
  {
    h5::File f = h5::File::open(tmp.string());
    check_format(f);
    const std::int64_t s = f.attr_int("step"), r = f.attr_int("rank"), w = f.attr_int("world_size");
    GPPF_CHECK(s == step && r == rank && w == world, tmp.string(), " is rank ", r, " of ", w, " at step ", s,
               ", publishing expects rank ", rank, " of ", world, " at step ", step);
    GPPF_CHECK(f.has_attr("shard_crc32"), tmp.string(), " is unfinished (no shard_crc32 attribute)");
    crc = f.attr_int("shard_crc32");
  }
  return {crc, static_cast<std::int64_t>(fs::file_size(tmp))};
}

// Every rank's error ("" when fine), on every rank; collective. The common case (no error) costs
// one all-reduce of an int.
std::vector<std::string> all_errors(const std::string& mine, MPI_Comm comm, int world) {
  std::vector<std::string> out(static_cast<std::size_t>(world));
  if (world == 1) {
    out[0] = mine;
    return out;
  }
  int failed = mine.empty() ? 0 : 1, any = 0;
  GPPF_MPI_CHECK(MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, comm));
  if (!any) return out;
  constexpr std::size_t kLen = 512;
  std::vector<char> send(kLen, '\0'), recv(kLen * static_cast<std::size_t>(world), '\0');
  std::memcpy(send.data(), mine.data(), std::min(mine.size(), kLen - 1));
  GPPF_MPI_CHECK(MPI_Allgather(send.data(), static_cast<int>(kLen), MPI_CHAR, recv.data(), static_cast<int>(kLen),
                               MPI_CHAR, comm));
  for (std::size_t r = 0; r < out.size(); ++r) out[r] = std::string(recv.data() + r * kLen);
  return out;
}

std::string reason_of(const std::exception& e) {
  if (const auto* g = dynamic_cast<const Error*>(&e)) return g->reason();
  return e.what();
}

}  // namespace

void write_checkpoint(const std::string& path, const CheckpointMeta& meta, const CheckpointTensors& tensors) {
  try {
    write_rank_file(path, meta.step, 0, 1, meta, tensors, true);
  } catch (const std::exception& e) {
    GPPF_THROW("checkpoint ", path, " was not written: ", reason_of(e));
  }
}

std::string write_checkpoint_shard(const std::string& run_dir, std::int64_t step, int rank, int world,
                                   const CheckpointMeta& meta, const CheckpointTensors& tensors) {
  const fs::path dir = fs::path(run_dir) / "checkpoints";
  std::error_code ec;
  fs::create_directories(dir, ec);  // every rank at once: "exists" is fine, checked below
  GPPF_CHECK(fs::is_directory(dir), dir.string(), ": cannot create the checkpoint directory (", ec.message(), ")");
  const fs::path tmp = tmp_of(rank_file(dir, step, rank));
  try {
    write_rank_file(tmp.string(), step, rank, world, meta, tensors, /*complete_main=*/world == 1);  // fsynced
  } catch (...) {
    fs::remove(tmp, ec);
    throw;
  }
  return tmp.string();
}

std::string publish_checkpoint(const std::string& run_dir, std::int64_t step, int keep, MPI_Comm comm,
                               const std::string& local_error) {
  int rank = 0, world = 1;
  if (comm != MPI_COMM_NULL) {
    GPPF_MPI_CHECK(MPI_Comm_rank(comm, &rank));
    GPPF_MPI_CHECK(MPI_Comm_size(comm, &world));
  }
  const fs::path dir = fs::path(run_dir) / "checkpoints";
  const fs::path main = dir / checkpoint_file_name(step), mine_tmp = tmp_of(rank_file(dir, step, rank));
  std::string error = local_error;
  std::array<std::int64_t, 2> info{0, 0};
  if (error.empty()) {
    try {
      info = written_file(mine_tmp, step, rank, world);
    } catch (const std::exception& e) {
      error = reason_of(e);
    }
  }
  const auto errors = all_errors(error, comm, world);
  if (std::any_of(errors.begin(), errors.end(), [](const auto& e) { return !e.empty(); })) {
    std::error_code ec;
    fs::remove(mine_tmp, ec);
    std::string msg;
    for (std::size_t r = 0; r < errors.size(); ++r)
      if (!errors[r].empty()) msg += str(msg.empty() ? "" : "; ", world > 1 ? str("rank ", r, ": ") : "", errors[r]);
    GPPF_THROW("checkpoint ", main.string(), " was not saved: ", msg);
  }
  std::vector<std::int64_t> all(2 * static_cast<std::size_t>(world));
  if (world > 1)
    GPPF_MPI_CHECK(MPI_Gather(info.data(), 2, MPI_INT64_T, all.data(), 2, MPI_INT64_T, 0, comm));
  else
    std::copy(info.begin(), info.end(), all.begin());
  std::string failure;
  if (rank == 0) {
    try {
      publish_files(run_dir, dir, step, keep, world, all);
    } catch (const std::exception& e) {
      failure = reason_of(e);
      if (failure.empty()) failure = "unknown error";
    }
  }
  if (world > 1) {
    int n = static_cast<int>(failure.size());
    GPPF_MPI_CHECK(MPI_Bcast(&n, 1, MPI_INT, 0, comm));
    failure.resize(static_cast<std::size_t>(n));
    if (n > 0) GPPF_MPI_CHECK(MPI_Bcast(failure.data(), n, MPI_CHAR, 0, comm));
  }
  GPPF_CHECK(failure.empty(), "checkpoint ", main.string(), " was not published: ", failure);
  return main.string();
}

std::string save_checkpoint(const std::string& run_dir, int keep, const CheckpointMeta& meta,
                            const CheckpointTensors& tensors, MPI_Comm comm) {
  int rank = 0, world = 1;
  if (comm != MPI_COMM_NULL) {
    GPPF_MPI_CHECK(MPI_Comm_rank(comm, &rank));
    GPPF_MPI_CHECK(MPI_Comm_size(comm, &world));
  }
  std::string error;
  try {
    (void)write_checkpoint_shard(run_dir, meta.step, rank, world, meta, tensors);
  } catch (const std::exception& e) {
    error = reason_of(e);
  }
  return publish_checkpoint(run_dir, meta.step, keep, comm, error);
}

}  // namespace gppf::train
