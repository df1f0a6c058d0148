#include "src/train/onnx_export.hpp"

#include <onnx/checker.h>
#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "gppf/build_info.hpp"
#include "io/loader.hpp"

namespace gppf::train {
namespace {

// Every BatchNorm of the network is built with the default eps (src/nn/layers.hpp).
constexpr double kBnEps = 1e-5;

// The activations as the graph holds them: NCHW, batch dynamic.
struct Value {
  std::string name;
  std::int64_t c = 0, h = 0, w = 0;
};

class GraphBuilder {
 public:
  GraphBuilder(onnx::GraphProto& g, Network& net) : m_g(g) {
    for (nn::Parameter* p : net.parameters()) m_params[p->name] = &p->value;
    for (const auto& [name, t] : net.buffers()) m_buffers[name] = t;
  }

  bool has_param(const std::string& name) const { return m_params.count(name) > 0; }
  std::vector<float> param(const std::string& name) const { return lookup(m_params, name, "/params/").second; }
  Shape param_shape(const std::string& name) const { return lookup(m_params, name, "/params/").first; }
  std::vector<float> buffer(const std::string& name) const { return lookup(m_buffers, name, "/buffers/").second; }

  std::string constant(const std::string& name, const std::vector<std::int64_t>& dims, const std::vector<float>& v) {
    onnx::TensorProto* t = m_g.add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::FLOAT);
    for (auto d : dims) t->add_dims(d);
    // raw_data is little-endian float32, as our tensors are on the hosts we build for.
    t->set_raw_data(std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float)));
    m_bytes += static_cast<std::int64_t>(v.size() * sizeof(float));
    return name;
  }

  onnx::NodeProto& node(const std::string& op, const std::vector<std::string>& inputs, const std::string& output) {
    onnx::NodeProto* n = m_g.add_node();
    n->set_op_type(op);
    n->set_name(output);
    for (const auto& i : inputs) n->add_input(i);
    n->add_output(output);
    return *n;
  }

  // A unique value name: `base`, or `base_2`, ... when taken.
  std::string fresh(const std::string& base) {
    const int k = ++m_used[base];
    return k == 1 ? base : str(base, "_", k);
  }

  std::int64_t bytes() const { return m_bytes; }

 private:
  using Table = std::map<std::string, Tensor*>;
  static std::pair<Shape, std::vector<float>> lookup(const Table& t, const std::string& name, const char* group) {
    const auto it = t.find(name);
    GPPF_CHECK(it != t.end(), "export: the network has no tensor ", group, name);
    return {it->second->shape(), it->second->to_float_vector()};
  }
  onnx::GraphProto& m_g;
  Table m_params, m_buffers;
  std::map<std::string, int> m_used;
  std::int64_t m_bytes = 0;
};

void set_int(onnx::NodeProto& n, const std::string& name, std::int64_t v) {
  onnx::AttributeProto* a = n.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(v);
}

void set_ints(onnx::NodeProto& n, const std::string& name, const std::vector<std::int64_t>& v) {
  onnx::AttributeProto* a = n.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INTS);
  for (auto x : v) a->add_ints(x);
}

void set_string(onnx::NodeProto& n, const std::string& name, const std::string& v) {
  onnx::AttributeProto* a = n.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::STRING);
  a->set_s(v);
}

void value_info(onnx::ValueInfoProto* v, const OnnxValue& o) {
  v->set_name(o.name);
  onnx::TypeProto_Tensor* t = v->mutable_type()->mutable_tensor_type();
  t->set_elem_type(onnx::TensorProto::FLOAT);
  for (auto d : o.shape) {
    onnx::TensorShapeProto_Dimension* dim = t->mutable_shape()->add_dim();
    if (d < 0)
      dim->set_dim_param("N");
    else
      dim->set_dim_value(d);
  }
}

class Exporter {
 public:
  Exporter(onnx::GraphProto& g, LoadedModel& m, int task)
      : m_b(g, *m.net), m_model(m), m_task(task), m_spec(m.data.specs.at(static_cast<std::size_t>(task))) {}

  // conv (our weight [O, kh, kw, I/g], ONNX's [O, I/g, kh, kw]) with its bias, then the BN `bn` in
  // inference form folded in (none when empty), times `gate`, then an optional ReLU.
  Value conv(const Value& x, const std::string& cname, const std::string& bn, int stride, int pad, bool with_relu,
             float gate, const std::string& out, const std::vector<float>* weight_override = nullptr,
             const Shape& shape_override = {}) {
    const Shape ws = weight_override ? shape_override : m_b.param_shape(cname + ".weight");
    const std::vector<float> w = weight_override ? *weight_override : m_b.param(cname + ".weight");
    const std::int64_t o = ws[0], kh = ws[1], kw = ws[2], ig = ws[3];
    GPPF_CHECK(x.c % ig == 0, "export: ", cname, " takes ", ig, " channels per group, its input has ", x.c);
    const std::int64_t groups = x.c / ig;
    std::vector<double> scale(static_cast<std::size_t>(o), 1.0), shift(static_cast<std::size_t>(o), 0.0);
    if (m_b.has_param(cname + ".bias")) {
      const std::vector<float> b = m_b.param(cname + ".bias");
      for (std::size_t i = 0; i < shift.size(); ++i) shift[i] = b[i];
    }
    if (!bn.empty()) {
      const std::vector<float> gamma = m_b.param(bn + ".gamma"), beta = m_b.param(bn + ".beta");
      const std::vector<float> mean = m_b.buffer(str(bn, ".running_mean.task", m_task));
      const std::vector<float> var = m_b.buffer(str(bn, ".running_var.task", m_task));
      for (std::size_t i = 0; i < scale.size(); ++i) {
        const double s = gamma[i] / std::sqrt(static_cast<double>(var[i]) + kBnEps);
        scale[i] = s;
        shift[i] = s * (shift[i] - mean[i]) + beta[i];
      }
    }
    std::vector<float> wt(w.size()), bias(static_cast<std::size_t>(o));
    for (std::int64_t a = 0; a < o; ++a) {
      const double s = scale[static_cast<std::size_t>(a)] * gate;
      bias[static_cast<std::size_t>(a)] = static_cast<float>(shift[static_cast<std::size_t>(a)] * gate);
      for (std::int64_t i = 0; i < ig; ++i)
        for (std::int64_t y = 0; y < kh; ++y)
          for (std::int64_t z = 0; z < kw; ++z)
            wt[static_cast<std::size_t>(((a * ig + i) * kh + y) * kw + z)] =
                static_cast<float>(w[static_cast<std::size_t>(((a * kh + y) * kw + z) * ig + i)] * s);
    }
    const std::string name = m_b.fresh(out);
    const std::string wn = m_b.constant(name + ".W", {o, ig, kh, kw}, wt);
    const std::string bias_name = m_b.constant(name + ".B", {o}, bias);
    const std::string conv_out = with_relu ? name + ".conv" : name;
    onnx::NodeProto& n = m_b.node("Conv", {x.name, wn, bias_name}, conv_out);
    set_ints(n, "kernel_shape", {kh, kw});
    set_ints(n, "strides", {stride, stride});
    set_ints(n, "pads", {pad, pad, pad, pad});
    set_ints(n, "dilations", {1, 1});
    set_int(n, "group", groups);
    if (with_relu) m_b.node("Relu", {conv_out}, name);
    return {name, o, (x.h + 2 * pad - kh) / stride + 1, (x.w + 2 * pad - kw) / stride + 1};
  }

  Value add(const Value& a, const Value& b, const std::string& out) {
    const std::string name = m_b.fresh(out);
    m_b.node("Add", {a.name, b.name}, name);
    return {name, a.c, a.h, a.w};
  }

  Value relu(const Value& x, const std::string& out) {
    const std::string name = m_b.fresh(out);
    m_b.node("Relu", {x.name}, name);
    return {name, x.c, x.h, x.w};
  }

  // Our upsample (kernels/resample.hpp): nearest src = floor(dst * in / out), bilinear at
  // (dst + 0.5) * in / out - 0.5 clamped at 0 = ONNX Resize asymmetric/floor and half_pixel.
  Value resize(const Value& x, std::int64_t oh, std::int64_t ow, bool bilinear, const std::string& out) {
    if (x.h == oh && x.w == ow) return x;  // both modes are the identity then
    auto scale = [](std::int64_t in, std::int64_t o) {
      // Output size is floor(in * scale) (ONNX): never let rounding make it one short.
      float s = static_cast<float>(o) / static_cast<float>(in);
      while (std::floor(static_cast<float>(in) * s) < static_cast<float>(o))
        s = std::nextafter(s, std::numeric_limits<float>::infinity());
      return s;
    };
    const std::string name = m_b.fresh(out);
    const std::string roi = m_b.constant(name + ".roi", {0}, {});
    const std::string sc = m_b.constant(name + ".scales", {4}, {1.0f, 1.0f, scale(x.h, oh), scale(x.w, ow)});
    onnx::NodeProto& n = m_b.node("Resize", {x.name, roi, sc}, name);
    if (bilinear) {
      set_string(n, "mode", "linear");
      set_string(n, "coordinate_transformation_mode", "half_pixel");
    } else {
      set_string(n, "mode", "nearest");
      set_string(n, "coordinate_transformation_mode", "asymmetric");
      set_string(n, "nearest_mode", "floor");
    }
    return {name, x.c, oh, ow};
  }

  // The input: raw pixel values, normalised in the graph as an evaluation loader does (io/loader.hpp
  // input_format, normalise: pixel * (inv_std / 255) + (-mean * inv_std), the same float operations).
  Value input(OnnxValue& info) {
    const io::InputFormat fmt = io::input_format(m_spec.manifest, io::LoaderConfig{}, m_spec.config.dataset);
    const int c = m_spec.channels;
    GPPF_CHECK(fmt.channels == c && static_cast<int>(fmt.mean.size()) == c, "export: input format of ",
               m_spec.config.dataset, " has ", fmt.channels, " channels, the task ", c);
    std::vector<float> scale, bias;
    for (int k = 0; k < c; ++k) {
      const auto i = static_cast<std::size_t>(k);
      scale.push_back(fmt.inv_std[i] / 255.0f);
      bias.push_back(-fmt.mean[i] * fmt.inv_std[i]);
      m_mean.push_back(fmt.mean[i]);
      m_std.push_back(1.0f / fmt.inv_std[i]);
    }
    info = {"image", {-1, c, m_spec.height, m_spec.width}};
    // [C, 1, 1] broadcasts like [1, C, 1, 1]; OpenCV 4.6 rejects a [1, C, 1, 1] constant with C > 1.
    m_b.node("Mul", {"image", m_b.constant("normalise.scale", {c, 1, 1}, scale)}, "image.scaled");
    m_b.node("Add", {"image.scaled", m_b.constant("normalise.shift", {c, 1, 1}, bias)}, "input");
    return {"input", c, m_spec.height, m_spec.width};
  }

  Value stem(const Value& x) {
    nn::Backbone& bb = m_model.net->backbone();
    const nn::BackboneSpec& s = bb.spec();
    Shape ws = m_b.param_shape("stem.conv.weight");
    std::vector<float> w = m_b.param("stem.conv.weight");
    if (x.c == 1) {
      // A grey image runs with the channel-summed kernel (src/nn/backbone.hpp).
      std::vector<float> g(w.size() / 3);
      for (std::size_t i = 0; i < g.size(); ++i) g[i] = w[3 * i] + w[3 * i + 1] + w[3 * i + 2];
      w = std::move(g);
      ws[3] = 1;
    }
    Value y = conv(x, "stem.conv", "stem.bn", s.stem_stride, static_cast<int>(ws[1] / 2), true, 1.0f, "stem", &w, ws);
    if (!s.stem_pool) return y;
    const std::string name = m_b.fresh("stem.pool");
    onnx::NodeProto& n = m_b.node("MaxPool", {y.name}, name);
    set_ints(n, "kernel_shape", {3, 3});
    set_ints(n, "strides", {2, 2});
    set_ints(n, "pads", {1, 1, 1, 1});
    return {name, y.c, (y.h + 2 - 3) / 2 + 1, (y.w + 2 - 3) / 2 + 1};
  }

  // relu(shortcut(x) + sum_j gate_j * lego_j(x)) over the task's route (src/nn/lego.hpp).
  Value lego_layer(nn::LegoLayer& layer, const Value& x) {
    const nn::LegoLayerSpec& s = layer.spec();
    const std::string& name = layer.name();
    const nn::Route r = layer.route(m_task, 0, false);  // inference: no noise, no warm-up
    Value acc =
        layer.proj() ? conv(x, name + ".proj", name + ".proj_bn", s.stride, 0, false, 1.0f, name + ".shortcut") : x;
    for (std::size_t j = 0; j < r.legos.size(); ++j) {
      const int i = r.legos[j];
      const std::string lego = i < s.num_shared ? str(name, ".shared", i) : str(name, ".lego", i - s.num_shared);
      Value h = conv(x, lego + ".conv1", lego + ".bn1", 1, 0, true, 1.0f, lego + ".h1");
      h = conv(h, lego + ".conv2", lego + ".bn2", s.stride, 1, true, 1.0f, lego + ".h2");
      h = conv(h, lego + ".conv3", lego + ".bn3", 1, 0, false, r.gates[j], lego + ".gated");
      acc = add(acc, h, name + ".sum");
    }
    m_routes.push_back(r);
    return relu(acc, name);
  }

  std::vector<Value> backbone(const Value& x) {
    nn::Backbone& bb = m_model.net->backbone();
    Value h = stem(x);
    std::vector<Value> features;
    const auto layers = bb.lego_layers();
    std::size_t stage = 0;
    for (std::size_t i = 0; i < layers.size(); ++i) {
      h = lego_layer(*layers[i], h);
      if (static_cast<int>(i) == bb.stage_ends()[stage]) {
        features.push_back(h);
        ++stage;
      }
    }
    return features;
  }

  // Global and 2x2-grid average pooling, then the linear layer (src/nn/heads.cpp). Our feature
  // vector is [global C | grid (cell-major, channel-minor) 4C]; ONNX flattens the grid channel-major,
  // so the linear weight's columns are permuted instead of the activations.
  Value classification(const std::string& head, const Value& f) {
    GPPF_CHECK(f.h >= 2 && f.w >= 2, "export: the last stage is ", f.h, "x", f.w, ", smaller than the 2x2 grid");
    m_b.node("GlobalAveragePool", {f.name}, head + ".global");
    onnx::NodeProto& flat1 = m_b.node("Flatten", {head + ".global"}, head + ".global.flat");
    set_int(flat1, "axis", 1);
    onnx::NodeProto& grid = m_b.node("AveragePool", {f.name}, head + ".grid");
    set_ints(grid, "kernel_shape", {(f.h + 1) / 2, (f.w + 1) / 2});
    set_ints(grid, "strides", {f.h / 2, f.w / 2});
    onnx::NodeProto& flat2 = m_b.node("Flatten", {head + ".grid"}, head + ".grid.flat");
    set_int(flat2, "axis", 1);
    onnx::NodeProto& cat = m_b.node("Concat", {head + ".global.flat", head + ".grid.flat"}, head + ".features");
    set_int(cat, "axis", 1);
    const Shape ws = m_b.param_shape(head + ".fc.weight");
    const std::vector<float> w = m_b.param(head + ".fc.weight");
    const std::int64_t out = ws[0], in = ws[1], c = f.c;
    GPPF_CHECK(in == 5 * c, "export: ", head, ".fc.weight has ", in, " inputs, expected 5 x ", c);
    std::vector<float> wp(w.size());
    for (std::int64_t o = 0; o < out; ++o) {
      for (std::int64_t k = 0; k < c; ++k)
        wp[static_cast<std::size_t>(o * in + k)] = w[static_cast<std::size_t>(o * in + k)];
      for (std::int64_t cell = 0; cell < 4; ++cell)
        for (std::int64_t k = 0; k < c; ++k)
          wp[static_cast<std::size_t>(o * in + c + k * 4 + cell)] =
              w[static_cast<std::size_t>(o * in + c + cell * c + k)];
    }
    onnx::NodeProto& gemm = m_b.node("Gemm",
                                     {head + ".features", m_b.constant(head + ".fc.W", {out, in}, wp),
                                      m_b.constant(head + ".fc.B", {out}, m_b.param(head + ".fc.bias"))},
                                     "logits");
    set_int(gemm, "transB", 1);
    return {"logits", out, 0, 0};
  }

  // The FPN neck (src/nn/heads.cpp FpnNeck::forward).
  Value neck(const std::string& n, const std::vector<Value>& f) {
    const nn::NeckSpec& ns = m_model.config.neck;
    const int context = std::max(0, m_spec.config.context_levels);
    std::vector<Value> lat;
    for (std::size_t s = static_cast<std::size_t>(ns.first_stage); s < f.size(); ++s)
      lat.push_back(
          conv(f[s], str(n, ".lateral", s), str(n, ".lateral_bn", s), 1, 0, true, 1.0f, str(n, ".lateral", s)));
    for (int e = 0; e < context; ++e) {
      const Value in = e == 0 ? f.back() : lat.back();
      lat.push_back(conv(in, str(n, ".context", e), str(n, ".context_bn", e), 2, 1, true, 1.0f, str(n, ".context", e)));
    }
    Value p = lat.back();
    for (int i = static_cast<int>(lat.size()) - 2; i >= 0; --i) {
      const Value& l = lat[static_cast<std::size_t>(i)];
      p = add(l, resize(p, l.h, l.w, false, str(n, ".up", i)), str(n, ".p", i));
    }
    return conv(p, n + ".smooth", n + ".smooth_bn", 1, 1, true, 1.0f, n + ".out");
  }

  std::vector<Value> detection(const std::string& head, const std::vector<Value>& f) {
    const Value x = neck(head + ".neck", f);
    std::vector<Value> outs;
    for (const char* branch : {"heatmap", "size", "offset"}) {
      const std::string b = head + "." + branch;
      const Value h = conv(x, b + ".conv", "", 1, 1, true, 1.0f, b + ".hidden");
      outs.push_back(conv(h, b + ".out", "", 1, 0, false, 1.0f, branch));
    }
    return outs;
  }

  Value segmentation(const std::string& head, const std::vector<Value>& f) {
    Value low = conv(neck(head + ".neck", f), head + ".classifier", "", 1, 0, false, 1.0f, head + ".low");
    if (m_b.has_param(head + ".skip.weight")) {
      const Value fine = conv(f[0], head + ".skip", "", 1, 0, false, 1.0f, head + ".skip");
      low = add(resize(low, fine.h, fine.w, true, head + ".low.up"), fine, head + ".fine");
    }
    if (low.h == m_spec.height && low.w == m_spec.width) {
      m_b.node("Identity", {low.name}, "logits");
    } else {
      const Value up = resize(low, m_spec.height, m_spec.width, true, "logits");
      GPPF_CHECK(up.name == "logits", "export: output name taken");
    }
    return {"logits", low.c, m_spec.height, m_spec.width};
  }

  OnnxExportResult build(onnx::GraphProto& g) {
    OnnxExportResult r;
    const Value x = input(r.input);
    const std::vector<Value> f = backbone(x);
    const std::string head = "head." + m_spec.config.name;
    std::vector<Value> outs;
    switch (m_spec.config.type) {
      case io::TaskType::Classification: outs = {classification(head, f.back())}; break;
      case io::TaskType::Detection: outs = detection(head, f); break;
      case io::TaskType::Segmentation: outs = {segmentation(head, f)}; break;
    }
    value_info(g.add_input(), r.input);
    for (const Value& v : outs) {
      r.outputs.push_back(v.h > 0 ? OnnxValue{v.name, {-1, v.c, v.h, v.w}} : OnnxValue{v.name, {-1, v.c}});
      value_info(g.add_output(), r.outputs.back());
    }
    r.nodes = g.node_size();
    r.weight_bytes = m_b.bytes();
    return r;
  }

  const std::vector<nn::Route>& routes() const { return m_routes; }
  const std::vector<float>& mean() const { return m_mean; }
  const std::vector<float>& stddev() const { return m_std; }

 private:
  GraphBuilder m_b;
  LoadedModel& m_model;
  int m_task;
  const TaskSpec& m_spec;
  std::vector<nn::Route> m_routes;
  std::vector<float> m_mean, m_std;
};

void add_meta(onnx::ModelProto& m, const std::string& key, const std::string& value) {
  onnx::StringStringEntryProto* e = m.add_metadata_props();
  e->set_key(key);
  e->set_value(value);
}

}  // namespace

OnnxExportResult export_onnx(LoadedModel& model, int task, const std::string& path) {
  GPPF_CHECK(model.net->device().is_host() && model.net->activation_dtype() == DType::F32,
             "export: load the checkpoint on the host in f32");
  GPPF_CHECK(!model.net->backbone().is_vit(), "export: ", model.path, ": gppf-vit has no ONNX export yet");
  const TaskSpec& spec = model.data.specs.at(static_cast<std::size_t>(task));
  onnx::ModelProto m;
  m.set_ir_version(onnx::IR_VERSION_2020_5_8);  // IR 7: the one that goes with opset 13
  m.set_producer_name("gppf");
  m.set_producer_version(build::kVersion);
  m.set_model_version(model.meta.step);
  m.set_doc_string(str("GPPF task '", spec.config.name, "' (", io::task_name(spec.config.type), ") from ", model.path,
                       " at step ", model.meta.step, "; docs/INTEROP.md"));
  onnx::OperatorSetIdProto* opset = m.add_opset_import();
  opset->set_domain("");
  opset->set_version(kOnnxOpset);
  onnx::GraphProto* g = m.mutable_graph();
  g->set_name("gppf." + spec.config.name);
  Exporter ex(*g, model, task);
  const OnnxExportResult r = ex.build(*g);

  nlohmann::json routes = nlohmann::json::array();
  const auto layers = model.net->backbone().lego_layers();
  for (std::size_t i = 0; i < layers.size(); ++i)
    routes.push_back({{"layer", layers[i]->name()}, {"legos", ex.routes()[i].legos}, {"gates", ex.routes()[i].gates}});
  add_meta(m, "gppf.task", spec.config.name);
  add_meta(m, "gppf.type", io::task_name(spec.config.type));
  add_meta(m, "gppf.classes", nlohmann::json(spec.manifest.classes).dump());
  add_meta(m, "gppf.checkpoint", model.path);
  add_meta(m, "gppf.step", std::to_string(model.meta.step));
  add_meta(m, "gppf.input", "image: float32 [N, C, H, W] pixel values 0..255 (RGB or grey); normalised in the graph");
  add_meta(m, "gppf.mean", nlohmann::json(ex.mean()).dump());
  add_meta(m, "gppf.std", nlohmann::json(ex.stddev()).dump());
  add_meta(m, "gppf.routes", routes.dump());
  if (spec.config.type == io::TaskType::Detection) {
    add_meta(m, "gppf.stride", std::to_string(spec.height / r.outputs[0].shape[2]));
    add_meta(m, "gppf.max_detections", std::to_string(spec.config.max_detections));
  }
  try {
    onnx::checker::check_model(m);
  } catch (const std::exception& e) {
    GPPF_THROW("export: the graph for task '", spec.config.name, "' fails onnx's checker: ", e.what());
  }
  std::string bytes;
  GPPF_CHECK(m.SerializeToString(&bytes), "export: cannot serialise the ONNX model (over 2 GiB?)");
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    GPPF_CHECK(out.good(), "export: ", tmp, ": cannot open for writing (", std::strerror(errno), ")");
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.close();
    if (!out.good()) {
      std::error_code ec;
      std::filesystem::remove(tmp, ec);
      GPPF_THROW("export: ", tmp, ": write failed (", std::strerror(errno), ")");
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  GPPF_CHECK(!ec, "export: ", path, ": cannot rename ", tmp, " into place (", ec.message(), ")");
  return r;
}

}  // namespace gppf::train
