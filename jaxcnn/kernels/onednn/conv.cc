// Convolution forward, input gradient and weight gradient through oneDNN, as XLA FFI
// handlers (float32 or bfloat16, channels-last input (N, *spatial, C), kernel
// (*kernel, C/G, O), 1-3 spatial dimensions, any stride, dilation, non-negative padding
// and groups). The bfloat16 handlers (suffix Bf16) read and write bfloat16 buffers and
// accumulate in float32 inside oneDNN (AMX / AVX512-BF16 kernels where the CPU has them);
// their weight gradient is computed in float32 and rounded once to bfloat16.
//
// Why: XLA:CPU's own convolution backward transposes the weight gradient's input and
// runs at about half its forward's rate; oneDNN (what PyTorch uses on CPU) has direct
// kernels for all three passes. Built on first use by jaxcnn/kernels/onednn/build.py
// against oneDNN 3.x (pip: onednn-devel-cpu-gomp, a dependency of jaxcnn on x86-64 Linux).
//
// Every handler takes the geometry as one int64 array attribute:
//   [groups, rank, stride[rank], dilation[rank] (XLA's: 1 = none), pad_lo[rank], pad_hi[rank]]
// Primitive descriptors are cached per (pass, data type, epilogue, shapes, geometry). Every call runs on one
// thread of this library's own (see OnednnThread), one call at a time.
//
// Fused training forward (JaxcnnOnednnConvBiasForward[Bf16]): x, w and a bias (C,) --
// empty for none -- with attribute "activation" (Activation: 0 none, 1 ReLU, 2 logistic
// sigmoid): y = [act](conv(x, w) + b), the bias as oneDNN's bias argument and the
// activation as an eltwise post-op, so the result is written once instead of XLA
// re-reading it to add the bias and apply the activation (issue 22, "fused convolutions"). JaxcnnOnednnConvWeightBiasGrad[Bf16] returns the weight gradient and the
// bias gradient (the sum of dy over batch and space) from one backward-weights primitive,
// which reads dy once for both.
//
// Int8 inference (JaxcnnOnednnConvForwardS8, JaxcnnOnednnMatmulS8): int8 input and int8
// kernel to an int32 result, the products summed exactly in int32 (VNNI / AMX int8 tiles
// where the CPU has them) -- the same integers as lax's int8 convolution / dot with
// preferred_element_type=int32; the caller rescales to float.
//
// Fused int8 inference (JaxcnnOnednnConvS8Fused, JaxcnnOnednnMatmulS8Fused): the same
// products with the caller's per-channel rescale as oneDNN's runtime weights scale, an
// epilogue (attribute "epilogue", EpilogueCode: bias, relu, per-channel binary ops, one
// residual tensor add) as post-ops, and an f32 result or an s8 one quantised with a
// runtime dst scale -- the next layer's input, so XLA never reads the int32 sums back.
// Operands: x, w, scale (C,), vectors (one f32 row per per-channel op, C), dst scale (1,),
// tensor (the residual, result-shaped, or empty). JaxcnnOnednnMaxPoolS8 max-pools s8
// between them. The fused plans keep their scratchpad and packed weights between calls
// (packed weights per caller buffer, repacked only when its bytes change: PackedFor).
//
// Batch normalisation in training mode (JaxcnnOnednnBatchNorm{Forward,Backward}[Bf16],
// below): not a convolution, but built into the same library so that one build, one
// checksum and one loader serve every oneDNN handler.

#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <unordered_map>
#include <vector>

#include <unistd.h>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using Dims = memory::dims;

namespace {

enum class Pass { kForward, kInputGrad, kWeightGrad, kForwardInt8 };

struct Geometry {
  int64_t groups = 1;
  Dims stride, dilation, pad_lo, pad_hi;  // dilation as oneDNN counts it: 0 = none
};

// False when the attribute does not have the layout above.
bool ParseGeometry(ffi::Span<const int64_t> g, size_t rank, Geometry& geo) {
  if (g.size() != 2 + 4 * rank || g[1] != static_cast<int64_t>(rank) || g[0] < 1) return false;
  geo.groups = g[0];
  for (size_t i = 0; i < rank; ++i) {
    geo.stride.push_back(g[2 + i]);
    geo.dilation.push_back(g[2 + rank + i] - 1);
    geo.pad_lo.push_back(g[2 + 2 * rank + i]);
    geo.pad_hi.push_back(g[2 + 3 * rank + i]);
  }
  return true;
}

// The one thread every oneDNN call runs on. oneDNN parallelises each call with OpenMP,
// and GNU OpenMP keeps a separate team of spinning threads per calling thread: called
// from whichever XLA worker runs the thunk, several teams spin against each other and
// every pass ran ~25% slower than the same kernels in PyTorch. One calling thread means
// one team; one call at a time means the calls (which each use every core) never share
// the cores with each other (XLA runs independent thunks -- a layer's two gradients --
// concurrently).
class OnednnThread {
 public:
  OnednnThread() : thread_([this] { Loop(); }) { thread_.detach(); }

  ffi::Error Run(std::function<ffi::Error()> job) {
    std::packaged_task<ffi::Error()> task(std::move(job));
    auto result = task.get_future();
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(std::move(task));
    }
    ready_.notify_one();
    return result.get();
  }

 private:
  void Loop() {
    for (;;) {
      std::packaged_task<ffi::Error()> task;
      {
        std::unique_lock<std::mutex> lock(mu_);
        ready_.wait(lock, [this] { return !queue_.empty(); });
        task = std::move(queue_.front());
        queue_.pop_front();
      }
      task();
    }
  }

  std::mutex mu_;
  std::condition_variable ready_;
  std::deque<std::packaged_task<ffi::Error()>> queue_;
  std::thread thread_;
};

// `plan = get()`, or what building the primitive threw (an `Exception`) as one
// InvalidArgument: "jaxcnn oneDNN <what>: no primitive: ...".
template <typename Exception = dnnl::error, typename P, typename Get>
ffi::Error BuildPlan(std::shared_ptr<P>& plan, const char* what, Get&& get) {
  try {
    plan = get();
  } catch (const Exception& e) {
    return ffi::Error::InvalidArgument(std::string("jaxcnn oneDNN ") + what + ": no primitive: " + e.what());
  }
  return ffi::Error::Success();
}

ffi::Error OnOnednnThread(std::function<ffi::Error()> job) {
  static std::mutex mu;
  static OnednnThread* thread = nullptr;  // never destroyed: lives as long as the process
  static pid_t owner = 0;
  OnednnThread* current;
  {
    std::lock_guard<std::mutex> lock(mu);
    if (thread == nullptr || owner != getpid()) {  // a forked child has no copy of the thread
      thread = new OnednnThread();
      owner = getpid();
    }
    current = thread;
  }
  return current->Run([job = std::move(job)]() -> ffi::Error {
    try {
      return job();
    } catch (const std::exception& e) {  // never let an exception cross into XLA
      return ffi::Error::Internal(std::string("jaxcnn oneDNN conv: ") + e.what());
    }
  });
}

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

memory::format_tag ChannelsLast(size_t rank) {
  switch (rank) {
    case 1: return memory::format_tag::nwc;
    case 2: return memory::format_tag::nhwc;
    default: return memory::format_tag::ndhwc;
  }
}

// (N, *spatial, C) channels-last buffer described in oneDNN's logical (N, C, *spatial) order.
memory::desc ActivationDesc(ffi::Span<const int64_t> nhwc, memory::data_type dt) {
  size_t rank = nhwc.size() - 2;
  Dims dims = {nhwc[0], nhwc[rank + 1]};
  for (size_t i = 0; i < rank; ++i) dims.push_back(nhwc[1 + i]);
  return memory::desc(dims, dt, ChannelsLast(rank));
}

// (*kernel, C/G, O) buffer in oneDNN's logical (O, I, *kernel) or (G, O/G, I, *kernel) order,
// with the strides of its physical layout.
memory::desc WeightDesc(ffi::Span<const int64_t> hwio, int64_t groups, memory::data_type dt) {
  size_t rank = hwio.size() - 2;
  int64_t in = hwio[rank], out = hwio[rank + 1];
  Dims kernel(hwio.begin(), hwio.begin() + rank), kernel_strides(rank);
  int64_t s = in * out;
  for (size_t i = rank; i-- > 0;) {
    kernel_strides[i] = s;
    s *= kernel[i];
  }
  Dims dims, strides;
  if (groups == 1) {
    dims = {out, in};
    strides = {1, out};
  } else {
    dims = {groups, out / groups, in};
    strides = {out / groups, 1, out};
  }
  dims.insert(dims.end(), kernel.begin(), kernel.end());
  strides.insert(strides.end(), kernel_strides.begin(), kernel_strides.end());
  return memory::desc(dims, dt, strides);
}

memory::desc Any(const memory::desc& d) {
  return memory::desc(d.get_dims(), d.get_data_type(), memory::format_tag::any);
}

memory::desc Any(const memory::desc& d, memory::data_type dt) {
  return memory::desc(d.get_dims(), dt, memory::format_tag::any);
}

// One cached set of primitives for a (pass, shapes, geometry).
struct Plan {
  memory::desc src, weights, dst;          // the caller's layouts
  memory::desc bias;                       // (C,) in the data type; used when the plan has a bias
  memory::desc primitive_weights;          // the layout the primitive wants
  dnnl::primitive primitive;
  memory::desc scratchpad;
  dnnl::reorder weights_in, weights_out;   // caller <-> primitive weight layouts, when they differ
  bool reorder_weights = false;
};

// What a training pass does besides the convolution (a plan's key includes it): a bias
// (forward: added; weight gradient: its gradient computed too) and, forward only, a ReLU
// or a logistic sigmoid.
enum EpilogueBits : int { kNone = 0, kWithBias = 1, kWithRelu = 2, kWithLogistic = 4 };

using Key = std::tuple<int, int, int, std::vector<int64_t>, std::vector<int64_t>, std::vector<int64_t>>;

// oneDNN 3.2's bfloat16 convolution without AMX, brgconv:avx512_core_bf16 (its backward
// data: brg_fwd:...+brgconv:avx512_core_bf16), multiplies a row of output pixels by the
// weights per micro-kernel call; a row under 8 pixels wide leaves most of the kernel's
// register tile idle. cifar_resnet18's 512-channel 3x3 convolutions on 4x4 maps ran its
// forward in 38.9 ms a step and the direct jit_bf16 kernel in 24.1 (backward data 39.4
// against 25.5); from 8 wide up brgconv was level or faster (docs/performance.md). So
// there, and only there, take oneDNN's next jit_bf16 implementation when it has one.
// `make()` builds the descriptor, twice where the rule applies: next_impl() moves the one
// it is called on, and oneDNN's first choice is kept when no jit_bf16 follows it.
constexpr int64_t kNarrowRow = 8;

template <typename Make>
auto PreferDirectBf16ForNarrowRows(int64_t out_width, Make&& make) {
  auto pd = make();
  auto impl = [](const decltype(pd)& d) { return std::string(d.impl_info_str()); };
  if (out_width >= kNarrowRow || impl(pd).find("brgconv:avx512_core_bf16") == std::string::npos) return pd;
  auto other = make();
  while (impl(other).rfind("jit_bf16:", 0) != 0) {
    if (!other.next_impl()) return pd;
  }
  return other;
}

std::shared_ptr<Plan> MakePlan(Pass pass, memory::data_type dt, ffi::Span<const int64_t> x_dims,
                               ffi::Span<const int64_t> w_dims, ffi::Span<const int64_t> y_dims, const Geometry& g,
                               int epilogue) {
  auto plan = std::make_shared<Plan>();
  plan->src = ActivationDesc(x_dims, dt);
  plan->weights = WeightDesc(w_dims, g.groups, dt);
  plan->dst = ActivationDesc(y_dims, dt);
  plan->bias = memory::desc({y_dims[y_dims.size() - 1]}, dt, memory::format_tag::a);
  bool with_bias = epilogue & kWithBias;
  auto& engine = Engine();
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (pass == Pass::kForwardInt8) {  // s8 x s8 -> s32: inference only
    plan->dst = ActivationDesc(y_dims, memory::data_type::s32);
    auto pd = dnnl::convolution_forward::primitive_desc(
        engine, dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, plan->src,
        Any(plan->weights), plan->dst, g.stride, g.dilation, g.pad_lo, g.pad_hi, attr);
    plan->primitive_weights = pd.weights_desc();
    plan->scratchpad = pd.scratchpad_desc();
    plan->primitive = dnnl::convolution_forward(pd);
    plan->reorder_weights = plan->primitive_weights != plan->weights;
    if (plan->reorder_weights) {
      plan->weights_in = dnnl::reorder(dnnl::reorder::primitive_desc(engine, plan->weights, engine,
                                                                      plan->primitive_weights));
    }
    return plan;
  }
  dnnl::primitive_attr fwd_attr;  // a copy of `attr` would share its handle (and the post-ops)
  fwd_attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (pass == Pass::kForward && (epilogue & (kWithRelu | kWithLogistic))) {
    dnnl::post_ops ops;
    ops.append_eltwise((epilogue & kWithRelu) ? dnnl::algorithm::eltwise_relu : dnnl::algorithm::eltwise_logistic,
                       0.f, 0.f);
    fwd_attr.set_post_ops(ops);
  }
  // (also the backward passes' hint, which must describe the forward they differentiate)
  auto make_fwd = [&] {
    return with_bias ? dnnl::convolution_forward::primitive_desc(
                           engine, dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
                           plan->src, Any(plan->weights), plan->bias, plan->dst, g.stride, g.dilation, g.pad_lo,
                           g.pad_hi, fwd_attr)
                     : dnnl::convolution_forward::primitive_desc(
                           engine, dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
                           plan->src, Any(plan->weights), plan->dst, g.stride, g.dilation, g.pad_lo, g.pad_hi,
                           fwd_attr);
  };
  const int64_t out_width = y_dims[y_dims.size() - 2];
  auto fwd = PreferDirectBf16ForNarrowRows(out_width, make_fwd);
  if (pass == Pass::kForward) {
    plan->primitive_weights = fwd.weights_desc();
    plan->scratchpad = fwd.scratchpad_desc();
    plan->primitive = dnnl::convolution_forward(fwd);
  } else if (pass == Pass::kInputGrad) {
    auto make = [&] {
      return dnnl::convolution_backward_data::primitive_desc(engine, dnnl::algorithm::convolution_direct,
                                                             plan->src, Any(plan->weights), plan->dst, g.stride,
                                                             g.dilation, g.pad_lo, g.pad_hi, fwd, attr);
    };
    auto pd = PreferDirectBf16ForNarrowRows(out_width, make);
    plan->primitive_weights = pd.weights_desc();
    plan->scratchpad = pd.scratchpad_desc();
    plan->primitive = dnnl::convolution_backward_data(pd);
  } else {
    // float32 weight gradient whatever the data type: bfloat16's is accumulated in
    // float32 and rounded once, by the reorder into the caller's buffer.
    // diff_bias in the caller's data type: oneDNN accumulates it in float32 either way.
    auto pd = with_bias ? dnnl::convolution_backward_weights::primitive_desc(
                              engine, dnnl::algorithm::convolution_direct, plan->src,
                              Any(plan->weights, memory::data_type::f32), plan->bias, plan->dst, g.stride,
                              g.dilation, g.pad_lo, g.pad_hi, fwd, attr)
                        : dnnl::convolution_backward_weights::primitive_desc(
                              engine, dnnl::algorithm::convolution_direct, plan->src,
                              Any(plan->weights, memory::data_type::f32), plan->dst, g.stride, g.dilation,
                              g.pad_lo, g.pad_hi, fwd, attr);
#if DNNL_VERSION_MAJOR == 3 && DNNL_VERSION_MINOR < 13
    // oneDNN 3.2's AMX bfloat16 weight gradient (brgconv_bwd_w:avx512_core_amx) stalls for
    // 0.3-4 s on some calls (fmnist_cnn's 64->64 3x3 on 14x14; 3.13.2 does not, see
    // docs/performance.md): take the next implementation (AVX512-BF16) there.
    if (dt == memory::data_type::bf16) {
      while (std::string(pd.impl_info_str()).find("amx") != std::string::npos && pd.next_impl()) {
      }
    }
#endif
    plan->primitive_weights = pd.diff_weights_desc();
    plan->scratchpad = pd.scratchpad_desc();
    plan->primitive = dnnl::convolution_backward_weights(pd);
  }
  plan->reorder_weights = plan->primitive_weights != plan->weights;
  if (plan->reorder_weights) {
    if (pass == Pass::kWeightGrad) {
      plan->weights_out = dnnl::reorder(dnnl::reorder::primitive_desc(engine, plan->primitive_weights, engine,
                                                                       plan->weights));
    } else {
      plan->weights_in = dnnl::reorder(dnnl::reorder::primitive_desc(engine, plan->weights, engine,
                                                                      plan->primitive_weights));
    }
  }
  return plan;
}

std::shared_ptr<Plan> GetPlan(Pass pass, memory::data_type dt, ffi::Span<const int64_t> x_dims,
                              ffi::Span<const int64_t> w_dims, ffi::Span<const int64_t> y_dims,
                              ffi::Span<const int64_t> geometry, const Geometry& g, int epilogue) {
  static std::mutex mu;
  static std::map<Key, std::shared_ptr<Plan>> cache;
  std::vector<int64_t> shapes(x_dims.begin(), x_dims.end());
  shapes.insert(shapes.end(), w_dims.begin(), w_dims.end());
  std::vector<int64_t> out(y_dims.begin(), y_dims.end());
  Key key{static_cast<int>(pass), static_cast<int>(dt), epilogue, shapes, out,
          std::vector<int64_t>(geometry.begin(), geometry.end())};
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  auto plan = MakePlan(pass, dt, x_dims, w_dims, y_dims, g, epilogue);
  cache.emplace(key, plan);
  return plan;
}

// Runs `pass` on the calling thread; `x`, `w`, `y` are the input, kernel and output
// buffers in the caller's layouts (for a gradient, the one computed is the result and
// the others are read). `b` is the bias (forward, read) or its gradient (weight gradient,
// written) when `epilogue` has kWithBias, else unused.
ffi::Error Execute(Pass pass, memory::data_type dt, void* x, ffi::Span<const int64_t> x_dims, void* w,
                   ffi::Span<const int64_t> w_dims, void* y, ffi::Span<const int64_t> y_dims,
                   ffi::Span<const int64_t> geometry, int epilogue, void* b) {
  size_t rank = x_dims.size() - 2;
  if (rank < 1 || rank > 3 || w_dims.size() != rank + 2 || y_dims.size() != rank + 2) {
    return ffi::Error::InvalidArgument("jaxcnn oneDNN conv: expected (N, *spatial, C) with 1-3 spatial dims");
  }
  Geometry parsed;
  if (!ParseGeometry(geometry, rank, parsed)) {
    return ffi::Error::InvalidArgument("jaxcnn oneDNN conv: malformed geometry attribute");
  }
  std::shared_ptr<Plan> plan;
  auto get = [&] { return GetPlan(pass, dt, x_dims, w_dims, y_dims, geometry, parsed, epilogue); };
  if (auto err = BuildPlan(plan, "conv", get); err.failure()) return err;
  auto& engine = Engine();
  dnnl::stream stream(engine);
  memory src(plan->src, engine, x), dst(plan->dst, engine, y), weights(plan->weights, engine, w);
  memory scratchpad(plan->scratchpad, engine);
  memory primitive_weights = weights;
  if (plan->reorder_weights) {
    primitive_weights = memory(plan->primitive_weights, engine);
    if (pass != Pass::kWeightGrad) plan->weights_in.execute(stream, weights, primitive_weights);
  }
  bool with_bias = epilogue & kWithBias;
  try {
    switch (pass) {
      case Pass::kForward:
      case Pass::kForwardInt8: {
        std::unordered_map<int, memory> args = {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, primitive_weights},
                                                {DNNL_ARG_DST, dst}, {DNNL_ARG_SCRATCHPAD, scratchpad}};
        if (with_bias) args[DNNL_ARG_BIAS] = memory(plan->bias, engine, b);
        plan->primitive.execute(stream, args);
        break;
      }
      case Pass::kInputGrad:
        plan->primitive.execute(stream, {{DNNL_ARG_DIFF_SRC, src}, {DNNL_ARG_WEIGHTS, primitive_weights},
                                         {DNNL_ARG_DIFF_DST, dst}, {DNNL_ARG_SCRATCHPAD, scratchpad}});
        break;
      case Pass::kWeightGrad: {
        std::unordered_map<int, memory> args = {{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_WEIGHTS, primitive_weights},
                                                {DNNL_ARG_DIFF_DST, dst}, {DNNL_ARG_SCRATCHPAD, scratchpad}};
        if (with_bias) args[DNNL_ARG_DIFF_BIAS] = memory(plan->bias, engine, b);
        plan->primitive.execute(stream, args);
        if (plan->reorder_weights) plan->weights_out.execute(stream, primitive_weights, weights);
        break;
      }
    }
    stream.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("jaxcnn oneDNN conv: ") + e.what());
  }
  return ffi::Error::Success();
}

ffi::Error Run(Pass pass, memory::data_type dt, void* x, ffi::Span<const int64_t> x_dims, void* w,
               ffi::Span<const int64_t> w_dims, void* y, ffi::Span<const int64_t> y_dims,
               ffi::Span<const int64_t> geometry, int epilogue = kNone, void* b = nullptr) {
  return OnOnednnThread([=] { return Execute(pass, dt, x, x_dims, w, w_dims, y, y_dims, geometry, epilogue, b); });
}

ffi::Error ForwardInt8(ffi::Buffer<ffi::S8> x, ffi::Buffer<ffi::S8> w, ffi::ResultBuffer<ffi::S32> y,
                       ffi::Span<const int64_t> geometry) {
  return Run(Pass::kForwardInt8, memory::data_type::s8, x.untyped_data(), x.dimensions(), w.untyped_data(),
             w.dimensions(), y->untyped_data(), y->dimensions(), geometry);
}

// (M, K) int8 x (K, N) int8 -> (M, N) int32, row-major, one cached primitive per shape.
struct MatmulPlan {
  memory::desc a, b, c, primitive_b, scratchpad;
  dnnl::primitive primitive;
  dnnl::reorder b_in;
  bool reorder_b = false;
};

std::shared_ptr<MatmulPlan> GetMatmulPlan(int64_t m, int64_t k, int64_t n) {
  static std::mutex mu;
  static std::map<std::tuple<int64_t, int64_t, int64_t>, std::shared_ptr<MatmulPlan>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto key = std::make_tuple(m, k, n);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  auto& engine = Engine();
  auto plan = std::make_shared<MatmulPlan>();
  plan->a = memory::desc({m, k}, memory::data_type::s8, memory::format_tag::ab);
  plan->b = memory::desc({k, n}, memory::data_type::s8, memory::format_tag::ab);
  plan->c = memory::desc({m, n}, memory::data_type::s32, memory::format_tag::ab);
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  auto pd = dnnl::matmul::primitive_desc(engine, plan->a, Any(plan->b), plan->c, attr);
  plan->primitive_b = pd.weights_desc();
  plan->scratchpad = pd.scratchpad_desc();
  plan->primitive = dnnl::matmul(pd);
  plan->reorder_b = plan->primitive_b != plan->b;
  if (plan->reorder_b) {
    plan->b_in = dnnl::reorder(dnnl::reorder::primitive_desc(engine, plan->b, engine, plan->primitive_b));
  }
  cache.emplace(key, plan);
  return plan;
}

ffi::Error ExecuteMatmulInt8(void* a, void* b, void* c, int64_t m, int64_t k, int64_t n) {
  std::shared_ptr<MatmulPlan> plan;
  if (auto err = BuildPlan(plan, "matmul", [&] { return GetMatmulPlan(m, k, n); }); err.failure()) return err;
  auto& engine = Engine();
  dnnl::stream stream(engine);
  memory a_mem(plan->a, engine, a), b_mem(plan->b, engine, b), c_mem(plan->c, engine, c);
  memory scratchpad(plan->scratchpad, engine);
  memory primitive_b = b_mem;
  try {
    if (plan->reorder_b) {
      primitive_b = memory(plan->primitive_b, engine);
      plan->b_in.execute(stream, b_mem, primitive_b);
    }
    plan->primitive.execute(stream, {{DNNL_ARG_SRC, a_mem}, {DNNL_ARG_WEIGHTS, primitive_b},
                                     {DNNL_ARG_DST, c_mem}, {DNNL_ARG_SCRATCHPAD, scratchpad}});
    stream.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("jaxcnn oneDNN matmul: ") + e.what());
  }
  return ffi::Error::Success();
}

ffi::Error MatmulInt8(ffi::Buffer<ffi::S8> a, ffi::Buffer<ffi::S8> b, ffi::ResultBuffer<ffi::S32> c) {
  auto ad = a.dimensions(), bd = b.dimensions();
  if (ad.size() != 2 || bd.size() != 2 || ad[1] != bd[0]) {
    return ffi::Error::InvalidArgument("jaxcnn oneDNN matmul: expected (M, K) x (K, N)");
  }
  void *pa = a.untyped_data(), *pb = b.untyped_data(), *pc = c->untyped_data();
  int64_t m = ad[0], k = ad[1], n = bd[1];
  return OnOnednnThread([=] { return ExecuteMatmulInt8(pa, pb, pc, m, k, n); });
}

// ---- Fused int8 inference: s8 x s8 products with their float epilogue inside oneDNN ----
//
// The s32 sums are rescaled by a per-output-channel f32 scale (the caller's s_in * w_scale,
// given as oneDNN's runtime weights scale), then the epilogue runs as post-ops, in order:
// relu (eltwise) or a binary add / sub / mul / div / max / min with one f32 row per output
// channel (a batch norm's scale and shift...), or an add of a dst-shaped f32 tensor (a
// residual connection's other branch; at most one). A leading "bias" code adds its row as
// oneDNN's f32 bias instead (applied to the rescaled sums, before the post-ops, and
// cheaper than a binary add: each binary post-op cost ~0.3 ms on fmnist_cnn's 32 -> 32
// layer, batch 128, where the whole s8 convolution took 1.9 ms). The destination is f32, or
// s8: round-half-even(v * (1 / dst_scale)) saturated to [-128, 127] -- the next product's
// input quantisation, so XLA never reads an int32 or float tensor between the two.

// Codes of the "epilogue" attribute (jaxcnn/kernels/onednn/int8.py: EPILOGUE_OPS).
enum EpilogueCode : int64_t {
  kRelu = 0, kAdd = 1, kSub = 2, kMul = 3, kDiv = 4, kMax = 5, kMin = 6, kBias = 7, kAddTensor = 8
};

// Appends the post-op of `code` to `ops` (a binary one reads a row shaped `channel`, or
// for kAddTensor a buffer shaped `tensor`); false for an unknown code.
bool AppendEpilogueOp(int64_t code, const memory::desc& channel, const memory::desc& tensor, dnnl::post_ops& ops) {
  static const std::map<int64_t, dnnl::algorithm> binary = {
      {kAdd, dnnl::algorithm::binary_add}, {kSub, dnnl::algorithm::binary_sub},
      {kMul, dnnl::algorithm::binary_mul}, {kDiv, dnnl::algorithm::binary_div},
      {kMax, dnnl::algorithm::binary_max}, {kMin, dnnl::algorithm::binary_min}};
  if (code == kRelu) {
    ops.append_eltwise(dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    return true;
  }
  if (code == kAddTensor) {
    ops.append_binary(dnnl::algorithm::binary_add, tensor);
    return true;
  }
  auto it = binary.find(code);
  if (it == binary.end()) return false;
  ops.append_binary(it->second, channel);
  return true;
}

// The weights of one caller buffer in the primitive's layout, and the bytes they were
// packed from: reused while the buffer still holds those bytes (a memcmp, ~10x cheaper
// than the reorder: cifar_resnet18's int8 pass spent 12 of 151 ms reordering its weights).
struct PackedWeights {
  std::vector<char> source;
  memory packed;
};

// One cached fused primitive. The scratchpad and the packed weights live with the plan
// and are reused: every call runs on the one oneDNN thread, one at a time (OnednnThread),
// and a fresh allocation per call costs page faults on every call.
struct FusedPlan {
  memory::desc src, weights, dst, channel, scale, dst_scale, bias;
  memory::desc tensor;           // kAddTensor's operand: dst's shape and layout, f32
  dnnl::primitive primitive;
  memory::desc primitive_weights;
  dnnl::reorder weights_in;      // caller's weight layout -> the primitive's, when they differ
  bool reorder_weights = false;
  bool s8_dst = false;
  bool with_bias = false;        // the first vectors row is oneDNN's bias
  std::vector<int64_t> post_ops; // the codes after a leading bias: which operand each reads
  memory scratchpad;
  std::map<const void*, PackedWeights> packed;  // by the caller's weights buffer
};

// At most this many weight buffers are kept packed per plan (layers of one shape share a
// plan); beyond it the cache starts over, as when a caller cycles through new buffers.
constexpr size_t kMaxPackedPerPlan = 32;

// The primitive's weights for the caller's buffer `w` (described by `weights`): packed
// once, repacked only when the buffer's bytes change.
memory PackedFor(FusedPlan& plan, void* w, memory& weights, dnnl::stream& stream) {
  size_t bytes = plan.weights.get_size();
  auto it = plan.packed.find(w);
  if (it != plan.packed.end() && it->second.source.size() == bytes &&
      std::memcmp(it->second.source.data(), w, bytes) == 0) {
    return it->second.packed;
  }
  if (it == plan.packed.end() && plan.packed.size() >= kMaxPackedPerPlan) plan.packed.clear();
  auto& entry = plan.packed[w];
  if (!entry.packed) entry.packed = memory(plan.primitive_weights, Engine());
  plan.weights_in.execute(stream, weights, entry.packed);
  stream.wait();
  entry.source.assign(static_cast<const char*>(w), static_cast<const char*>(w) + bytes);
  return entry.packed;
}

// The attribute of a fused primitive: runtime per-channel weights scale (`weights_mask`:
// the output-channel dims of the weights), the epilogue post-ops, a runtime dst scale
// for an s8 destination; sets plan.with_bias and plan.post_ops. Throws
// std::invalid_argument for an unknown epilogue code or a "bias" that is not the first.
dnnl::primitive_attr FusedAttr(const std::vector<int64_t>& codes, int weights_mask, FusedPlan& plan) {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  attr.set_scales_mask(DNNL_ARG_WEIGHTS, weights_mask);
  if (plan.s8_dst) attr.set_scales_mask(DNNL_ARG_DST, 0);
  plan.with_bias = !codes.empty() && codes[0] == kBias;
  dnnl::post_ops ops;
  for (size_t i = plan.with_bias ? 1 : 0; i < codes.size(); ++i) {
    int64_t code = codes[i];
    if (!AppendEpilogueOp(code, plan.channel, plan.tensor, ops)) throw std::invalid_argument("unknown epilogue code");
    plan.post_ops.push_back(code);
  }
  attr.set_post_ops(ops);
  return attr;
}

// Fills in what every fused plan needs once its primitive descriptor exists.
void FinishFusedPlan(FusedPlan& plan, const memory::desc& primitive_weights, const memory::desc& scratchpad,
                     int64_t channels) {
  auto& engine = Engine();
  plan.scale = memory::desc({channels}, memory::data_type::f32, memory::format_tag::a);
  plan.dst_scale = memory::desc({1}, memory::data_type::f32, memory::format_tag::a);
  plan.scratchpad = memory(scratchpad, engine);
  plan.primitive_weights = primitive_weights;
  plan.reorder_weights = primitive_weights != plan.weights;
  if (plan.reorder_weights) {
    plan.weights_in = dnnl::reorder(dnnl::reorder::primitive_desc(engine, plan.weights, engine, primitive_weights));
  }
}

std::shared_ptr<FusedPlan> MakeFusedConvPlan(const std::vector<int64_t>& x_dims, const std::vector<int64_t>& w_dims,
                                             const std::vector<int64_t>& y_dims, const Geometry& g,
                                             const std::vector<int64_t>& codes, memory::data_type dst_dt) {
  auto plan = std::make_shared<FusedPlan>();
  size_t rank = x_dims.size() - 2;
  plan->src = ActivationDesc(ffi::Span<const int64_t>(x_dims.data(), x_dims.size()), memory::data_type::s8);
  plan->weights = WeightDesc(ffi::Span<const int64_t>(w_dims.data(), w_dims.size()), g.groups,
                             memory::data_type::s8);
  plan->dst = ActivationDesc(ffi::Span<const int64_t>(y_dims.data(), y_dims.size()), dst_dt);
  plan->s8_dst = dst_dt == memory::data_type::s8;
  int64_t channels = y_dims.back();
  Dims channel_dims(rank + 2, 1);
  channel_dims[1] = channels;
  plan->channel = memory::desc(channel_dims, memory::data_type::f32, ChannelsLast(rank));
  plan->tensor = ActivationDesc(ffi::Span<const int64_t>(y_dims.data(), y_dims.size()), memory::data_type::f32);
  // per output channel: dim 0 of (O, I, *k), dims 0 and 1 of (G, O/G, I, *k)
  auto attr = FusedAttr(codes, g.groups == 1 ? 1 : 3, *plan);
  plan->bias = memory::desc({channels}, memory::data_type::f32, memory::format_tag::a);
  auto pd = plan->with_bias
                ? dnnl::convolution_forward::primitive_desc(
                      Engine(), dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, plan->src,
                      Any(plan->weights), plan->bias, plan->dst, g.stride, g.dilation, g.pad_lo, g.pad_hi, attr)
                : dnnl::convolution_forward::primitive_desc(
                      Engine(), dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, plan->src,
                      Any(plan->weights), plan->dst, g.stride, g.dilation, g.pad_lo, g.pad_hi, attr);
  plan->primitive = dnnl::convolution_forward(pd);
  FinishFusedPlan(*plan, pd.weights_desc(), pd.scratchpad_desc(), channels);
  return plan;
}

std::shared_ptr<FusedPlan> MakeFusedMatmulPlan(int64_t m, int64_t k, int64_t n, const std::vector<int64_t>& codes,
                                               memory::data_type dst_dt) {
  auto plan = std::make_shared<FusedPlan>();
  plan->src = memory::desc({m, k}, memory::data_type::s8, memory::format_tag::ab);
  plan->weights = memory::desc({k, n}, memory::data_type::s8, memory::format_tag::ab);
  plan->dst = memory::desc({m, n}, dst_dt, memory::format_tag::ab);
  plan->s8_dst = dst_dt == memory::data_type::s8;
  plan->channel = memory::desc({1, n}, memory::data_type::f32, memory::format_tag::ab);
  plan->tensor = memory::desc({m, n}, memory::data_type::f32, memory::format_tag::ab);
  auto attr = FusedAttr(codes, 1 << 1, *plan);  // per column of (K, N)
  plan->bias = memory::desc({1, n}, memory::data_type::f32, memory::format_tag::ab);
  auto pd = plan->with_bias
                ? dnnl::matmul::primitive_desc(Engine(), plan->src, Any(plan->weights), plan->bias, plan->dst, attr)
                : dnnl::matmul::primitive_desc(Engine(), plan->src, Any(plan->weights), plan->dst, attr);
  plan->primitive = dnnl::matmul(pd);
  FinishFusedPlan(*plan, pd.weights_desc(), pd.scratchpad_desc(), n);
  return plan;
}

// The cached plan of type P for `key` (one cache per plan type), built by `make` the first
// time it is asked for.
template <typename P>
std::shared_ptr<P> CachedPlan(const std::vector<int64_t>& key, const std::function<std::shared_ptr<P>()>& make) {
  static std::mutex mu;
  static std::map<std::vector<int64_t>, std::shared_ptr<P>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  auto plan = make();
  cache.emplace(key, plan);
  return plan;
}

// Fused plans are keyed by everything that shapes the primitive (kind, dst type, shapes,
// geometry, epilogue codes), flattened with their lengths.
std::shared_ptr<FusedPlan> GetFusedPlan(const std::vector<int64_t>& key,
                                        const std::function<std::shared_ptr<FusedPlan>()>& make) {
  return CachedPlan<FusedPlan>(key, make);
}

void AppendKey(std::vector<int64_t>& key, ffi::Span<const int64_t> values) {
  key.push_back(static_cast<int64_t>(values.size()));
  key.insert(key.end(), values.begin(), values.end());
}

// The caller's buffers of one fused call.
struct FusedArgs {
  void *x, *w, *y;
  float *scale, *vectors, *dst_scale, *tensor;
};

// Runs a fused plan on the calling thread (the oneDNN thread).
ffi::Error ExecuteFused(FusedPlan& plan, const FusedArgs& a) {
  auto& engine = Engine();
  dnnl::stream stream(engine);
  memory weights(plan.weights, engine, a.w);
  std::unordered_map<int, memory> args = {
      {DNNL_ARG_SRC, memory(plan.src, engine, a.x)},
      {DNNL_ARG_DST, memory(plan.dst, engine, a.y)},
      {DNNL_ARG_SCRATCHPAD, plan.scratchpad},
      {DNNL_ARG_ATTR_SCALES | DNNL_ARG_WEIGHTS, memory(plan.scale, engine, a.scale)}};
  if (plan.s8_dst) args[DNNL_ARG_ATTR_SCALES | DNNL_ARG_DST] = memory(plan.dst_scale, engine, a.dst_scale);
  int64_t channels = plan.scale.get_dims()[0];
  float* row = a.vectors;
  if (plan.with_bias) {
    args[DNNL_ARG_BIAS] = memory(plan.bias, engine, row);
    row += channels;
  }
  for (size_t i = 0; i < plan.post_ops.size(); ++i) {
    int arg = DNNL_ARG_ATTR_MULTIPLE_POST_OP(static_cast<int>(i)) | DNNL_ARG_SRC_1;
    if (plan.post_ops[i] == kAddTensor) {
      args[arg] = memory(plan.tensor, engine, a.tensor);
    } else if (plan.post_ops[i] != kRelu) {
      args[arg] = memory(plan.channel, engine, row);
      row += channels;
    }
  }
  try {
    args[DNNL_ARG_WEIGHTS] = plan.reorder_weights ? PackedFor(plan, a.w, weights, stream) : weights;
    plan.primitive.execute(stream, args);
    stream.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("jaxcnn oneDNN fused int8: ") + e.what());
  }
  return ffi::Error::Success();
}

// The result's oneDNN type (f32 or s8), or an error.
ffi::ErrorOr<memory::data_type> FusedDstType(const ffi::AnyBuffer& y) {
  if (y.element_type() == ffi::DataType::F32) return memory::data_type::f32;
  if (y.element_type() == ffi::DataType::S8) return memory::data_type::s8;
  return ffi::Unexpected(ffi::Error::InvalidArgument("jaxcnn oneDNN fused int8: the result must be f32 or s8"));
}

// Checks the epilogue operands against the result `dst`: scale (C,), one vectors row (C,)
// per bias / per-channel binary op, a one-element dst scale, and a tensor shaped like dst
// when an op adds one (at most one such op).
ffi::Error CheckFusedOperands(ffi::Span<const int64_t> epilogue, ffi::Span<const int64_t> dst,
                              const ffi::Buffer<ffi::F32>& scale, const ffi::Buffer<ffi::F32>& vectors,
                              const ffi::Buffer<ffi::F32>& dst_scale, const ffi::Buffer<ffi::F32>& tensor) {
  int64_t rows = 0, tensors = 0, channels = dst.back();
  for (int64_t code : epilogue) {
    tensors += code == kAddTensor;
    rows += code != kRelu && code != kAddTensor;
  }
  auto vd = vectors.dimensions(), td = tensor.dimensions();
  bool tensor_ok = tensors == 0 || (tensors == 1 && std::vector<int64_t>(td.begin(), td.end()) ==
                                                        std::vector<int64_t>(dst.begin(), dst.end()));
  if (scale.element_count() != static_cast<size_t>(channels) || vd.size() != 2 || vd[0] != rows ||
      vd[1] != channels || dst_scale.element_count() != 1 || !tensor_ok) {
    return ffi::Error::InvalidArgument(
        "jaxcnn oneDNN fused int8: expected scale (C,), vectors (per-channel epilogue ops, C), a one-element dst "
        "scale and, for one add_tensor, a tensor shaped like the result");
  }
  return ffi::Error::Success();
}

ffi::Error ConvS8Fused(ffi::Buffer<ffi::S8> x, ffi::Buffer<ffi::S8> w, ffi::Buffer<ffi::F32> scale,
                       ffi::Buffer<ffi::F32> vectors, ffi::Buffer<ffi::F32> dst_scale, ffi::Buffer<ffi::F32> tensor,
                       ffi::Result<ffi::AnyBuffer> y, ffi::Span<const int64_t> geometry,
                       ffi::Span<const int64_t> epilogue) {
  auto xd = x.dimensions(), wd = w.dimensions(), yd = y->dimensions();
  size_t rank = xd.size() - 2;
  Geometry g;
  if (xd.size() < 3 || xd.size() > 5 || wd.size() != xd.size() || yd.size() != xd.size() ||
      !ParseGeometry(geometry, rank, g)) {
    return ffi::Error::InvalidArgument("jaxcnn oneDNN fused int8 conv: expected (N, *spatial, C), 1-3 spatial dims, "
                                       "and a geometry attribute for them");
  }
  auto dt = FusedDstType(*y);
  if (dt.has_error()) return dt.error();
  if (auto err = CheckFusedOperands(epilogue, yd, scale, vectors, dst_scale, tensor); err.failure()) return err;
  std::vector<int64_t> key = {0, static_cast<int64_t>(*dt)};
  for (auto dims : {xd, wd, yd, geometry, epilogue}) AppendKey(key, dims);
  std::vector<int64_t> xv(xd.begin(), xd.end()), wv(wd.begin(), wd.end()), yv(yd.begin(), yd.end());
  std::vector<int64_t> codes(epilogue.begin(), epilogue.end());
  FusedArgs args{x.untyped_data(), w.untyped_data(), y->untyped_data(), scale.typed_data(), vectors.typed_data(),
                 dst_scale.typed_data(), tensor.typed_data()};
  memory::data_type dst_dt = *dt;
  return OnOnednnThread([=]() -> ffi::Error {
    std::shared_ptr<FusedPlan> plan;
    auto make = [&] { return MakeFusedConvPlan(xv, wv, yv, g, codes, dst_dt); };
    auto get = [&] { return GetFusedPlan(key, make); };
    if (auto err = BuildPlan<std::exception>(plan, "fused int8 conv", get); err.failure()) return err;
    return ExecuteFused(*plan, args);
  });
}

ffi::Error MatmulS8Fused(ffi::Buffer<ffi::S8> a, ffi::Buffer<ffi::S8> b, ffi::Buffer<ffi::F32> scale,
                         ffi::Buffer<ffi::F32> vectors, ffi::Buffer<ffi::F32> dst_scale, ffi::Buffer<ffi::F32> tensor,
                         ffi::Result<ffi::AnyBuffer> c, ffi::Span<const int64_t> epilogue) {
  auto ad = a.dimensions(), bd = b.dimensions(), cd = c->dimensions();
  if (ad.size() != 2 || bd.size() != 2 || ad[1] != bd[0] || cd.size() != 2 || cd[0] != ad[0] || cd[1] != bd[1]) {
    return ffi::Error::InvalidArgument("jaxcnn oneDNN fused int8 matmul: expected (M, K) x (K, N) -> (M, N)");
  }
  auto dt = FusedDstType(*c);
  if (dt.has_error()) return dt.error();
  if (auto err = CheckFusedOperands(epilogue, cd, scale, vectors, dst_scale, tensor); err.failure()) return err;
  int64_t m = ad[0], k = ad[1], n = bd[1];
  std::vector<int64_t> key = {1, static_cast<int64_t>(*dt), m, k, n};
  AppendKey(key, epilogue);
  std::vector<int64_t> codes(epilogue.begin(), epilogue.end());
  FusedArgs args{a.untyped_data(), b.untyped_data(), c->untyped_data(), scale.typed_data(), vectors.typed_data(),
                 dst_scale.typed_data(), tensor.typed_data()};
  memory::data_type dst_dt = *dt;
  return OnOnednnThread([=]() -> ffi::Error {
    std::shared_ptr<FusedPlan> plan;
    auto make = [&] { return MakeFusedMatmulPlan(m, k, n, codes, dst_dt); };
    auto get = [&] { return GetFusedPlan(key, make); };
    if (auto err = BuildPlan<std::exception>(plan, "fused int8 matmul", get); err.failure()) return err;
    return ExecuteFused(*plan, args);
  });
}

// ---- int8 max pooling (between fused products whose s8 results it reads and writes) ----
//
// XLA:CPU's reduce_window on int8 took 1.3 ms for fmnist_cnn's first 2x2 pool (batch 128,
// 28x28x32), longer than on float32 (0.8 ms) and as long as the convolution before it;
// oneDNN's pooling reads the channels-last s8 buffer directly. Max pooling commutes with
// the (monotone) quantisation, so the result is the quantised float pool exactly.
// Attribute "window": [rank, kernel[rank], stride[rank], dilation[rank] (XLA's: 1 = none),
// pad_lo[rank], pad_hi[rank]]; padded elements never win (oneDNN leaves them out, XLA pads
// with -128: the same maximum while each window holds one real element, pad < kernel).

struct PoolPlan {
  memory::desc src, dst;
  dnnl::primitive primitive;
  memory scratchpad;  // kept: every call runs on the one oneDNN thread, one at a time
};

std::shared_ptr<PoolPlan> MakePoolPlan(const std::vector<int64_t>& x_dims, const std::vector<int64_t>& y_dims,
                                       const std::vector<int64_t>& window) {
  size_t rank = x_dims.size() - 2;
  auto part = [&](size_t i) { return Dims(window.begin() + 1 + i * rank, window.begin() + 1 + (i + 1) * rank); };
  Dims kernel = part(0), stride = part(1), dilation = part(2), pad_lo = part(3), pad_hi = part(4);
  for (auto& d : dilation) d -= 1;
  auto plan = std::make_shared<PoolPlan>();
  plan->src = ActivationDesc(ffi::Span<const int64_t>(x_dims.data(), x_dims.size()), memory::data_type::s8);
  plan->dst = ActivationDesc(ffi::Span<const int64_t>(y_dims.data(), y_dims.size()), memory::data_type::s8);
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  auto pd = dnnl::pooling_forward::primitive_desc(Engine(), dnnl::prop_kind::forward_inference,
                                                  dnnl::algorithm::pooling_max, plan->src, plan->dst, stride, kernel,
                                                  dilation, pad_lo, pad_hi, attr);
  plan->primitive = dnnl::pooling_forward(pd);
  plan->scratchpad = memory(pd.scratchpad_desc(), Engine());
  return plan;
}

std::shared_ptr<PoolPlan> GetPoolPlan(const std::vector<int64_t>& x_dims, const std::vector<int64_t>& y_dims,
                                      const std::vector<int64_t>& window) {
  std::vector<int64_t> key = x_dims;
  key.insert(key.end(), y_dims.begin(), y_dims.end());
  key.insert(key.end(), window.begin(), window.end());
  return CachedPlan<PoolPlan>(key, [&] { return MakePoolPlan(x_dims, y_dims, window); });
}

ffi::Error MaxPoolS8(ffi::Buffer<ffi::S8> x, ffi::Result<ffi::Buffer<ffi::S8>> y, ffi::Span<const int64_t> window) {
  auto xd = x.dimensions(), yd = y->dimensions();
  size_t rank = xd.size() - 2;
  if (xd.size() < 3 || xd.size() > 5 || yd.size() != xd.size() || window.size() != 1 + 5 * rank ||
      window[0] != static_cast<int64_t>(rank)) {
    return ffi::Error::InvalidArgument("jaxcnn oneDNN int8 max pool: expected (N, *spatial, C), 1-3 spatial dims, "
                                       "and a window attribute for them");
  }
  std::vector<int64_t> xv(xd.begin(), xd.end()), yv(yd.begin(), yd.end()), wv(window.begin(), window.end());
  void *src = x.untyped_data(), *dst = y->untyped_data();
  return OnOnednnThread([=]() -> ffi::Error {
    std::shared_ptr<PoolPlan> plan;
    if (auto err = BuildPlan(plan, "int8 max pool", [&] { return GetPoolPlan(xv, yv, wv); }); err.failure()) {
      return err;
    }
    auto& engine = Engine();
    dnnl::stream stream(engine);
    try {
      plan->primitive.execute(stream, {{DNNL_ARG_SRC, memory(plan->src, engine, src)},
                                       {DNNL_ARG_DST, memory(plan->dst, engine, dst)},
                                       {DNNL_ARG_SCRATCHPAD, plan->scratchpad}});
      stream.wait();
    } catch (const dnnl::error& e) {
      return ffi::Error::Internal(std::string("jaxcnn oneDNN int8 max pool: ") + e.what());
    }
    return ffi::Error::Success();
  });
}

template <ffi::DataType T>
constexpr memory::data_type OnednnType() {
  return T == ffi::DataType::BF16 ? memory::data_type::bf16 : memory::data_type::f32;
}

template <ffi::DataType T>
ffi::Error Forward(ffi::Buffer<T> x, ffi::Buffer<T> w, ffi::ResultBuffer<T> y, ffi::Span<const int64_t> geometry) {
  return Run(Pass::kForward, OnednnType<T>(), x.untyped_data(), x.dimensions(), w.untyped_data(), w.dimensions(),
             y->untyped_data(), y->dimensions(), geometry);
}

template <ffi::DataType T>
ffi::Error InputGrad(ffi::Buffer<T> dy, ffi::Buffer<T> w, ffi::ResultBuffer<T> dx,
                     ffi::Span<const int64_t> geometry) {
  return Run(Pass::kInputGrad, OnednnType<T>(), dx->untyped_data(), dx->dimensions(), w.untyped_data(),
             w.dimensions(), dy.untyped_data(), dy.dimensions(), geometry);
}

template <ffi::DataType T>
ffi::Error WeightGrad(ffi::Buffer<T> x, ffi::Buffer<T> dy, ffi::ResultBuffer<T> dw,
                      ffi::Span<const int64_t> geometry) {
  return Run(Pass::kWeightGrad, OnednnType<T>(), x.untyped_data(), x.dimensions(), dw->untyped_data(),
             dw->dimensions(), dy.untyped_data(), dy.dimensions(), geometry);
}

// The fused forward's activation attribute.
enum Activation : int64_t { kActIdentity = 0, kActRelu = 1, kActLogistic = 2 };

// y = [act](conv(x, w) + b); `b` (C,) or empty (no bias), `activation` an Activation.
template <ffi::DataType T>
ffi::Error BiasForward(ffi::Buffer<T> x, ffi::Buffer<T> w, ffi::Buffer<T> b, ffi::ResultBuffer<T> y,
                       ffi::Span<const int64_t> geometry, int64_t activation) {
  auto yd = y->dimensions();
  bool with_bias = b.element_count() > 0;
  if (with_bias && (b.dimensions().size() != 1 || yd.size() < 1 || b.dimensions()[0] != yd.back())) {
    return ffi::Error::InvalidArgument("jaxcnn oneDNN conv: expected a bias (C_out,) or an empty one");
  }
  if (activation != kActIdentity && activation != kActRelu && activation != kActLogistic) {
    return ffi::Error::InvalidArgument("jaxcnn oneDNN conv: activation must be 0 (none), 1 (relu) or 2 (logistic)");
  }
  int epilogue = (with_bias ? kWithBias : kNone) | (activation == kActRelu ? kWithRelu : kNone) |
                 (activation == kActLogistic ? kWithLogistic : kNone);
  return Run(Pass::kForward, OnednnType<T>(), x.untyped_data(), x.dimensions(), w.untyped_data(), w.dimensions(),
             y->untyped_data(), yd, geometry, epilogue, b.untyped_data());
}

// dw and db = sum of dy over batch and space, from one primitive.
template <ffi::DataType T>
ffi::Error WeightBiasGrad(ffi::Buffer<T> x, ffi::Buffer<T> dy, ffi::ResultBuffer<T> dw, ffi::ResultBuffer<T> db,
                          ffi::Span<const int64_t> geometry) {
  auto yd = dy.dimensions();
  if (db->dimensions().size() != 1 || yd.size() < 1 || db->dimensions()[0] != yd.back()) {
    return ffi::Error::InvalidArgument("jaxcnn oneDNN conv: expected a bias gradient (C_out,)");
  }
  return Run(Pass::kWeightGrad, OnednnType<T>(), x.untyped_data(), x.dimensions(), dw->untyped_data(),
             dw->dimensions(), dy.untyped_data(), yd, geometry, kWithBias, db->untyped_data());
}

// ---- Batch normalisation, training (JaxcnnOnednnBatchNorm{Forward,Backward}[Bf16]) ----
// x (N, *spatial, C) channels-last, 0-3 spatial dims; scale (gamma), shift (beta), mean and
// variance are float32 (C,) whatever x's type. Forward: y = (x - mean) / sqrt(var + eps) *
// scale + shift with the batch's mean and biased variance (returned for the running
// statistics). Backward, from the forward's mean and variance: dx, dscale = sum(dy * xh),
// dshift = sum(dy). oneDNN reads x twice for the statistics and once to normalise, and
// the backward reads x and dy twice: fewer passes than XLA's separate fusions.
struct BatchNormPlan {
  memory::desc data, channel;
  dnnl::primitive primitive;
  memory::desc scratchpad;
};

// (N, *spatial, C), 2-5 dims (checked by CheckChannels), as oneDNN's channels-last desc.
memory::desc BatchNormDataDesc(ffi::Span<const int64_t> dims, memory::data_type dt) {
  size_t rank = dims.size();
  memory::dims d = {dims[0], dims[rank - 1]};  // oneDNN's logical order: N, C, spatial
  for (size_t i = 1; i + 1 < rank; ++i) d.push_back(dims[i]);
  static const memory::format_tag tags[] = {memory::format_tag::nc, memory::format_tag::nwc,
                                            memory::format_tag::nhwc, memory::format_tag::ndhwc};
  return memory::desc(d, dt, tags[rank - 2]);
}

std::shared_ptr<BatchNormPlan> GetBatchNormPlan(bool backward, memory::data_type dt, ffi::Span<const int64_t> dims,
                                                float eps) {
  std::vector<int64_t> key = {backward, static_cast<int64_t>(dt)};
  AppendKey(key, dims);
  int32_t eps_bits;
  std::memcpy(&eps_bits, &eps, sizeof eps_bits);
  key.push_back(eps_bits);
  return CachedPlan<BatchNormPlan>(key, [&]() -> std::shared_ptr<BatchNormPlan> {
    auto plan = std::make_shared<BatchNormPlan>();
    plan->data = BatchNormDataDesc(dims, dt);
    plan->channel = memory::desc({dims[dims.size() - 1]}, memory::data_type::f32, memory::format_tag::a);
    auto flags = dnnl::normalization_flags::use_scale | dnnl::normalization_flags::use_shift;
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    auto forward = dnnl::batch_normalization_forward::primitive_desc(
        Engine(), dnnl::prop_kind::forward_training, plan->data, plan->data, eps, flags, attr);
    if (backward) {
      auto pd = dnnl::batch_normalization_backward::primitive_desc(
          Engine(), dnnl::prop_kind::backward, plan->data, plan->data, plan->data, eps, flags, forward, attr);
      plan->primitive = dnnl::batch_normalization_backward(pd);
      plan->scratchpad = pd.scratchpad_desc();
    } else {
      plan->primitive = dnnl::batch_normalization_forward(forward);
      plan->scratchpad = forward.scratchpad_desc();
    }
    return plan;
  });
}

ffi::Error CheckChannels(ffi::Span<const int64_t> dims, std::initializer_list<int64_t> counts) {
  if (dims.size() < 2 || dims.size() > 5) {
    return ffi::Error::InvalidArgument("jaxcnn oneDNN batch_norm: expected an input of 2-5 dims");
  }
  for (int64_t c : counts) {
    if (c != dims.back()) return ffi::Error::InvalidArgument("jaxcnn oneDNN batch_norm: expected (C,) vectors");
  }
  return ffi::Error::Success();
}

// Runs the (backward or forward) batch-norm plan for these dims on the oneDNN thread;
// `buffers`: (DNNL_ARG_*, the caller's data, true for a (C,) float32 vector).
ffi::Error RunBatchNorm(bool backward, memory::data_type dt, ffi::Span<const int64_t> dims, float eps,
                        const std::vector<std::tuple<int, void*, bool>>& buffers) {
  return OnOnednnThread([&]() -> ffi::Error {
    std::shared_ptr<BatchNormPlan> plan;
    auto built = BuildPlan<std::exception>(plan, backward ? "batch_norm backward" : "batch_norm",
                                           [&] { return GetBatchNormPlan(backward, dt, dims, eps); });
    if (built.failure()) return built;
    auto& engine = Engine();
    dnnl::stream stream(engine);
    std::unordered_map<int, memory> args = {{DNNL_ARG_SCRATCHPAD, memory(plan->scratchpad, engine)}};
    for (const auto& [arg, data, channel] : buffers) {
      args.emplace(arg, memory(channel ? plan->channel : plan->data, engine, data));
    }
    plan->primitive.execute(stream, args);
    stream.wait();
    return ffi::Error::Success();
  });
}

template <ffi::DataType T>
ffi::Error BatchNormForward(ffi::Buffer<T> x, ffi::Buffer<ffi::F32> scale, ffi::Buffer<ffi::F32> shift,
                            ffi::ResultBuffer<T> y, ffi::ResultBuffer<ffi::F32> mean,
                            ffi::ResultBuffer<ffi::F32> variance, float eps) {
  auto dims = x.dimensions();
  auto ok = CheckChannels(dims, {scale.element_count(), shift.element_count(), mean->element_count(),
                                 variance->element_count()});
  if (ok.failure()) return ok;
  return RunBatchNorm(false, OnednnType<T>(), dims, eps,
                      {{DNNL_ARG_SRC, x.untyped_data(), false}, {DNNL_ARG_DST, y->untyped_data(), false},
                       {DNNL_ARG_SCALE, scale.untyped_data(), true}, {DNNL_ARG_SHIFT, shift.untyped_data(), true},
                       {DNNL_ARG_MEAN, mean->untyped_data(), true},
                       {DNNL_ARG_VARIANCE, variance->untyped_data(), true}});
}

template <ffi::DataType T>
ffi::Error BatchNormBackward(ffi::Buffer<T> x, ffi::Buffer<T> dy, ffi::Buffer<ffi::F32> scale,
                             ffi::Buffer<ffi::F32> mean, ffi::Buffer<ffi::F32> variance, ffi::ResultBuffer<T> dx,
                             ffi::ResultBuffer<ffi::F32> dscale, ffi::ResultBuffer<ffi::F32> dshift, float eps) {
  auto dims = x.dimensions();
  auto ok = CheckChannels(dims, {scale.element_count(), mean.element_count(), variance.element_count(),
                                 dscale->element_count(), dshift->element_count()});
  if (ok.failure()) return ok;
  return RunBatchNorm(true, OnednnType<T>(), dims, eps,
                      {{DNNL_ARG_SRC, x.untyped_data(), false}, {DNNL_ARG_DIFF_DST, dy.untyped_data(), false},
                       {DNNL_ARG_SCALE, scale.untyped_data(), true}, {DNNL_ARG_MEAN, mean.untyped_data(), true},
                       {DNNL_ARG_VARIANCE, variance.untyped_data(), true},
                       {DNNL_ARG_DIFF_SRC, dx->untyped_data(), false},
                       {DNNL_ARG_DIFF_SCALE, dscale->untyped_data(), true},
                       {DNNL_ARG_DIFF_SHIFT, dshift->untyped_data(), true}});
}

}  // namespace

#define JAXCNN_BIAS_FORWARD(name, T)                                  \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(name, BiasForward<T>,                 \
                                ffi::Ffi::Bind()                      \
                                    .Arg<ffi::Buffer<T>>()            \
                                    .Arg<ffi::Buffer<T>>()            \
                                    .Arg<ffi::Buffer<T>>()            \
                                    .Ret<ffi::Buffer<T>>()            \
                                    .Attr<ffi::Span<const int64_t>>("geometry") \
                                    .Attr<int64_t>("activation"));
JAXCNN_BIAS_FORWARD(JaxcnnOnednnConvBiasForward, ffi::DataType::F32)
JAXCNN_BIAS_FORWARD(JaxcnnOnednnConvBiasForwardBf16, ffi::DataType::BF16)

#define JAXCNN_WEIGHT_BIAS_GRAD(name, T)                              \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(name, WeightBiasGrad<T>,              \
                                ffi::Ffi::Bind()                      \
                                    .Arg<ffi::Buffer<T>>()            \
                                    .Arg<ffi::Buffer<T>>()            \
                                    .Ret<ffi::Buffer<T>>()            \
                                    .Ret<ffi::Buffer<T>>()            \
                                    .Attr<ffi::Span<const int64_t>>("geometry"));
JAXCNN_WEIGHT_BIAS_GRAD(JaxcnnOnednnConvWeightBiasGrad, ffi::DataType::F32)
JAXCNN_WEIGHT_BIAS_GRAD(JaxcnnOnednnConvWeightBiasGradBf16, ffi::DataType::BF16)

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnOnednnConvForward, Forward<ffi::DataType::F32>,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<ffi::Span<const int64_t>>("geometry"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnOnednnConvForwardBf16, Forward<ffi::DataType::BF16>,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Ret<ffi::Buffer<ffi::BF16>>()
                                  .Attr<ffi::Span<const int64_t>>("geometry"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnOnednnConvInputGrad, InputGrad<ffi::DataType::F32>,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<ffi::Span<const int64_t>>("geometry"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnOnednnConvInputGradBf16, InputGrad<ffi::DataType::BF16>,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Ret<ffi::Buffer<ffi::BF16>>()
                                  .Attr<ffi::Span<const int64_t>>("geometry"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnOnednnConvWeightGrad, WeightGrad<ffi::DataType::F32>,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<ffi::Span<const int64_t>>("geometry"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnOnednnConvWeightGradBf16, WeightGrad<ffi::DataType::BF16>,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Ret<ffi::Buffer<ffi::BF16>>()
                                  .Attr<ffi::Span<const int64_t>>("geometry"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnOnednnConvForwardS8, ForwardInt8,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::S8>>()
                                  .Arg<ffi::Buffer<ffi::S8>>()
                                  .Ret<ffi::Buffer<ffi::S32>>()
                                  .Attr<ffi::Span<const int64_t>>("geometry"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnOnednnMatmulS8, MatmulInt8,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::S8>>()
                                  .Arg<ffi::Buffer<ffi::S8>>()
                                  .Ret<ffi::Buffer<ffi::S32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnOnednnConvS8Fused, ConvS8Fused,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::S8>>()
                                  .Arg<ffi::Buffer<ffi::S8>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<ffi::Span<const int64_t>>("geometry")
                                  .Attr<ffi::Span<const int64_t>>("epilogue"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnOnednnMatmulS8Fused, MatmulS8Fused,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::S8>>()
                                  .Arg<ffi::Buffer<ffi::S8>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<ffi::Span<const int64_t>>("epilogue"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnOnednnMaxPoolS8, MaxPoolS8,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::S8>>()
                                  .Ret<ffi::Buffer<ffi::S8>>()
                                  .Attr<ffi::Span<const int64_t>>("window"));

#define JAXCNN_BATCH_NORM_FORWARD(name, T)                            \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(name, BatchNormForward<T>,            \
                                ffi::Ffi::Bind()                      \
                                    .Arg<ffi::Buffer<T>>()            \
                                    .Arg<ffi::Buffer<ffi::F32>>()     \
                                    .Arg<ffi::Buffer<ffi::F32>>()     \
                                    .Ret<ffi::Buffer<T>>()            \
                                    .Ret<ffi::Buffer<ffi::F32>>()     \
                                    .Ret<ffi::Buffer<ffi::F32>>()     \
                                    .Attr<float>("eps"));
JAXCNN_BATCH_NORM_FORWARD(JaxcnnOnednnBatchNormForward, ffi::DataType::F32)
JAXCNN_BATCH_NORM_FORWARD(JaxcnnOnednnBatchNormForwardBf16, ffi::DataType::BF16)

#define JAXCNN_BATCH_NORM_BACKWARD(name, T)                           \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(name, BatchNormBackward<T>,           \
                                ffi::Ffi::Bind()                      \
                                    .Arg<ffi::Buffer<T>>()            \
                                    .Arg<ffi::Buffer<T>>()            \
                                    .Arg<ffi::Buffer<ffi::F32>>()     \
                                    .Arg<ffi::Buffer<ffi::F32>>()     \
                                    .Arg<ffi::Buffer<ffi::F32>>()     \
                                    .Ret<ffi::Buffer<T>>()            \
                                    .Ret<ffi::Buffer<ffi::F32>>()     \
                                    .Ret<ffi::Buffer<ffi::F32>>()     \
                                    .Attr<float>("eps"));
JAXCNN_BATCH_NORM_BACKWARD(JaxcnnOnednnBatchNormBackward, ffi::DataType::F32)
JAXCNN_BATCH_NORM_BACKWARD(JaxcnnOnednnBatchNormBackwardBf16, ffi::DataType::BF16)
