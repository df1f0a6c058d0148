#include "kernels/grouped_gemm.hpp"

#include <algorithm>
#include <cstdint>
#include <string>

#include "core/counters.hpp"
#include "core/graph.hpp"
#include "kernels/elementwise.hpp"

namespace gppf::kernels {
namespace {

constexpr const char* kOp = "grouped_gemm";

const Tensor& operand(const std::string& at, const char* what, const Tensor* t) {
  GPPF_CHECK(t && t->defined(), at, ": ", what, " is ", t ? "undefined" : "null");
  GPPF_CHECK(t->ndim() == 2, at, ": ", what, " must be 2-D, got ", t->desc());
  return *t;
}

// Host: f32 throughout, as kernels::gemm. CUDA: one input dtype (the first A's) for every A and B;
// each C f32 or that dtype.
void check_dtypes(const std::string& at, const Tensor& a, const Tensor& b, const Tensor& c, DType in) {
  if (a.device().is_host()) {
    check_dtype(at.c_str(), "A", a, DType::F32);
    check_dtype(at.c_str(), "B", b, DType::F32);
    check_dtype(at.c_str(), "C", c, DType::F32);
    return;
  }
  GPPF_CHECK(in == DType::F32 || in == DType::BF16, at, ": inputs must be f32 or bf16 on CUDA, got A ", a.desc());
  check_dtype(at.c_str(), "A (every A and B in problem 0's A dtype)", a, in);
  check_dtype(at.c_str(), "B (every A and B in problem 0's A dtype)", b, in);
  GPPF_CHECK(c.dtype() == DType::F32 || c.dtype() == in, at, ": C ", c.desc(), " cannot be computed from ",
             dtype_name(in), " inputs (f32 output, or the inputs' dtype)");
}

struct Span {
  std::uintptr_t begin = 0, end = 0;
  std::size_t problem = 0;
  const char* what = "";
  const Tensor* t = nullptr;
};

[[noreturn]] void overlap(const Span& out, const Span& other) {
  GPPF_THROW(kOp, ": problem ", out.problem, "'s C ", out.t->desc(), " overlaps problem ", other.problem, "'s ",
             other.what, " ", other.t->desc(),
             "; the problems run concurrently on CUDA, so no C may share memory with another operand");
}

// No C shares bytes with any other operand of a live problem (nor two Cs), as a concurrent launch needs.
void check_no_overlap(const std::vector<GroupedGemmItem>& live, const std::vector<std::size_t>& index) {
  std::vector<Span> outs, ins;
  auto span = [](const Tensor& t, std::size_t problem, const char* what) {
    const auto begin = reinterpret_cast<std::uintptr_t>(t.data());
    return Span{begin, begin + t.nbytes(), problem, what, &t};
  };
  for (std::size_t i = 0; i < live.size(); ++i) {
    outs.push_back(span(*live[i].c, index[i], "C"));
    if (live[i].a->nbytes() > 0) ins.push_back(span(*live[i].a, index[i], "A"));
    if (live[i].b->nbytes() > 0) ins.push_back(span(*live[i].b, index[i], "B"));
  }
  std::sort(outs.begin(), outs.end(), [](const Span& x, const Span& y) { return x.begin < y.begin; });
  // Sorted by start, any overlap among the Cs shows between neighbours.
  for (std::size_t k = 1; k < outs.size(); ++k)
    if (outs[k].begin < outs[k - 1].end) overlap(outs[k], outs[k - 1]);
  // The Cs are now disjoint and sorted, so their ends are sorted too.
  for (const Span& in : ins) {
    const auto it = std::partition_point(outs.begin(), outs.end(), [&](const Span& o) { return o.end <= in.begin; });
    if (it != outs.end() && it->begin < in.end) overlap(*it, in);
  }
}

}  // namespace

void grouped_gemm(bool trans_a, bool trans_b, float alpha, const std::vector<GemmProblem>& problems, const Stream& s) {
  constexpr std::int64_t kMax = 2147483647;  // BLAS and cuBLAS take 32-bit sizes
  std::vector<GroupedGemmItem> live;
  std::vector<std::size_t> index;  // each live item's problem
  Device device;
  DType in = DType::F32;
  for (std::size_t i = 0; i < problems.size(); ++i) {
    const GemmProblem& p = problems[i];
    const std::string at = str(kOp, ": problem ", i);
    const Tensor& a = operand(at, "A", p.a);
    const Tensor& b = operand(at, "B", p.b);
    operand(at, "C", p.c);
    Tensor& c = *p.c;
    if (i == 0) {
      device = a.device();
      in = a.dtype();
    }
    for (const auto& [what, t] : {std::pair<const char*, const Tensor*>{"A", &a}, {"B", &b}, {"C", &c}})
      GPPF_CHECK(t->device() == device, at, ": ", what, " ", t->desc(), " is not on ", device.str(),
                 " (problem 0's A); all operands of a call live on one device");
    check_dtypes(at, a, b, c, in);
    GemmShape g{trans_a, trans_b, trans_a ? a.dim(1) : a.dim(0), trans_b ? b.dim(0) : b.dim(1),
                trans_a ? a.dim(0) : a.dim(1)};
    const std::int64_t kb = trans_b ? b.dim(1) : b.dim(0);
    GPPF_CHECK(kb == g.k, at, ": inner dimensions differ: op(A) of ", a.desc(), (trans_a ? " (transposed)" : ""),
               " and op(B) of ", b.desc(), (trans_b ? " (transposed)" : ""));
    check_shape(at.c_str(), "C", c, {g.m, g.n});
    GPPF_CHECK(g.m <= kMax && g.n <= kMax && g.k <= kMax, at, ": sizes m=", g.m, " n=", g.n, " k=", g.k,
               " exceed the 32-bit limit of BLAS; split the problem");
    if (g.m == 0 || g.n == 0) continue;
    live.push_back({g, &a, &b, &c, p.beta});
    index.push_back(i);
  }
  check_no_overlap(live, index);
  if (live.empty()) return;

  // What CUDA launches (the header), counted on every device.
  const auto grouped =
      std::count_if(live.begin(), live.end(), [&](const GroupedGemmItem& it) { return it.c->dtype() == in; });
  const auto fallback = static_cast<std::int64_t>(live.size()) - grouped;
  const std::int64_t expected = 2 * ((grouped + kMaxGroupedProblems - 1) / kMaxGroupedProblems) + fallback;
  std::int64_t launched = -1;
  if (launch_on_cuda(device)) {
    launched = cuda::grouped_gemm(alpha, live, device_stream(s, *live.front().a));
  } else {
    // The items point at the caller's tensors: the work holds copies (A, B, C of each item) and points
    // the items at those when it runs.
    std::vector<Tensor> operands;
    operands.reserve(3 * live.size());
    for (const GroupedGemmItem& it : live) {
      operands.push_back(*it.a);
      operands.push_back(*it.b);
      operands.push_back(*it.c);
    }
    runtime::host_launch([alpha, live = std::move(live), operands = std::move(operands)]() mutable {
      for (std::size_t i = 0; i < live.size(); ++i) {
        live[i].a = &operands[3 * i];
        live[i].b = &operands[3 * i + 1];
        live[i].c = &operands[3 * i + 2];
      }
      host::grouped_gemm(alpha, live);
    });
  }
  GPPF_CHECK(launched < 0 || launched == expected, kOp, ": CUDA launched ", launched, " kernels, the counters say ",
             expected);
  runtime::count_launches(expected - 1);  // launch_on_cuda counted one
}

}  // namespace gppf::kernels
