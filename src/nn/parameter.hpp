#pragma once
// A trainable tensor with its gradient buffer. `touched` records whether any backward pass wrote the
// gradient in this step: the first writer overwrites (no zeroing pass), later ones accumulate, and the
// optimizer skips parameters nobody touched (a lego no task used gets no decay and no momentum step).
#include <string>

#include "core/error.hpp"
#include "core/tensor.hpp"
#include "kernels/common.hpp"

namespace gppf::nn {

// Which part of the network a parameter belongs to, set where it is made (so that sharding, reports
// and inspection need no name patterns). layer: the lego layer's index in the backbone; lego: a
// routed lego's index among the router's logits (Kind::Lego), or, with Kind::Shared and layer >= 0,
// an always-on shared lego's index (-1: the layer's projection shortcut); task: the router's or head's.
struct Owner {
  enum class Kind { Shared, Lego, Router, Head };
  Kind kind = Kind::Shared;
  int layer = -1;
  int lego = -1;
  int task = -1;
};

struct Parameter {
  std::string name;  // unique, dotted: "stage2.block0.lego3.conv1.weight"
  Tensor value;      // f32 master copy
  Tensor grad;       // f32, same shape and device; meaningful only when touched
  bool touched = false;
  bool decay = true;  // parameter groups: BN affine parameters and biases are created with decay = false
  bool trainable = true;
  // bf16 training (precision: bf16): the weight as the passes multiply with it, cast from `value`
  // once per step (Network::parameters_changed); undefined otherwise. Gradients stay f32 in `grad`.
  Tensor working{};
  Owner owner{};
  // Expert parallelism: a lego this process does not hold keeps its name and shape but no memory
  // (value, grad and working copy released; nothing reads or writes them on this process).
  Shape released_shape{};

  void release() {
    released_shape = value.shape();
    value = grad = working = Tensor();
  }
  bool released() const { return !value.defined() && !released_shape.empty(); }
  // Elements of the parameter, held here or not.
  std::int64_t numel() const { return released() ? shape_numel(released_shape) : value.numel(); }

  // The tensor a pass with activations of dtype `act` multiplies with.
  const Tensor& operand(DType act) const {
    if (act != DType::BF16) return value;
    GPPF_CHECK(working.defined(), name, ": bf16 activations but no bf16 working copy (set by precision: bf16)");
    return working;
  }
  // The mode for the next gradient write: Overwrite for the first one in a step, then Accumulate.
  kernels::GradMode take_grad_mode() {
    if (touched) return kernels::GradMode::Accumulate;
    touched = true;
    return kernels::GradMode::Overwrite;
  }
  // Called by the optimizer after the step.
  void clear_grad() { touched = false; }
};

}  // namespace gppf::nn
