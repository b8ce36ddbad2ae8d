// Front-end ops for matrix products, attention and LoRA merging: validate, lay operands out
// as the backend's [Bt, M, K] x [Bt, K, N] strided views (no copies where strides allow),
// allocate outputs and dispatch.
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "ops.h"

namespace nd::ops {

namespace {

bool is_compute_float(DType t) { return t == DType::F32 || t == DType::BF16 || t == DType::F16; }

std::string pair_str(const Tensor& a, const char* sep, const Tensor& b) {
  return shape_str(a.shape) + sep + shape_str(b.shape);
}

// A view over `base`'s storage with explicit geometry (byte offset relative to base).
Tensor view_of(const Tensor& base, int64_t extra_elems, const Shape& shape, const Shape& strides) {
  Tensor t = base;
  t.offset = base.offset + extra_elems * static_cast<int64_t>(base.itemsize());
  t.shape = shape;
  t.strides = strides;
  return t;
}

struct BatchDim {
  int64_t size, sa, sb;
};

// Merges adjacent batch dims that are collapsible for both operands; drops size-1 dims.
std::vector<BatchDim> collapse_batch(const Shape& batch, const Shape& sa, const Shape& sb) {
  std::vector<BatchDim> dims;
  for (size_t i = 0; i < batch.size(); ++i) {
    if (batch[i] == 1) continue;
    if (!dims.empty()) {
      BatchDim& prev = dims.back();
      if (prev.sa == sa[i] * batch[i] && prev.sb == sb[i] * batch[i]) {
        prev.size *= batch[i];
        prev.sa = sa[i];
        prev.sb = sb[i];
        continue;
      }
    }
    dims.push_back({batch[i], sa[i], sb[i]});
  }
  return dims;
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  const std::string what = "matmul: " + pair_str(a, " @ ", b);
  if (a.dim() < 2 || b.dim() < 2) throw std::invalid_argument(what + ": both operands need at least 2 dimensions");
  if (a.device() != b.device())
    throw std::invalid_argument(what + ": operands are on different devices (" + a.device().str() + " and " +
                                b.device().str() + ")");
  if (!is_compute_float(a.dtype) || !is_compute_float(b.dtype))
    throw std::invalid_argument(what + ": operands must be float32/bfloat16/float16, got " + dtype_name(a.dtype) +
                                " and " + dtype_name(b.dtype));
  const int64_t M = a.size(-2), K = a.size(-1), Kb = b.size(-2), N = b.size(-1);
  if (K != Kb)
    throw std::invalid_argument(what + ": inner dimensions " + std::to_string(K) + " and " + std::to_string(Kb) +
                                " differ");
  const Shape ba(a.shape.begin(), a.shape.end() - 2), bb(b.shape.begin(), b.shape.end() - 2);
  Shape batch;
  try {
    batch = broadcast_shapes(ba, bb);
  } catch (const std::invalid_argument&) {
    throw std::invalid_argument(what + ": batch dimensions " + shape_str(ba) + " and " + shape_str(bb) +
                                " cannot be broadcast together");
  }
  Shape out_shape = batch;
  out_shape.push_back(M);
  out_shape.push_back(N);
  Tensor out = Tensor::empty(out_shape, promote(a.dtype, b.dtype), a.device());
  if (M == 0 || N == 0 || shape_numel(batch) == 0) return out;

  Shape a_full = batch, b_full = batch;
  a_full.insert(a_full.end(), {M, K});
  b_full.insert(b_full.end(), {K, N});
  const Tensor ae = a.expand(a_full), be = b.expand(b_full);
  const size_t nb = batch.size();
  const Shape sa(ae.strides.begin(), ae.strides.begin() + nb), sb(be.strides.begin(), be.strides.begin() + nb);
  const int64_t am = ae.strides[nb], ak = ae.strides[nb + 1], bk = be.strides[nb], bn = be.strides[nb + 1];
  std::vector<BatchDim> dims = collapse_batch(batch, sa, sb);
  Backend& backend = backend_for(a.device());
  const Tensor no_bias;

  // b shared by every batch item and a's batch rows evenly spaced: one [Bt*M, K] x [K, N] product
  if (dims.size() == 1 && dims[0].sb == 0 && dims[0].sa == M * am) {
    const int64_t rows = dims[0].size * M;
    Tensor a3 = view_of(ae, 0, {1, rows, K}, {0, am, ak});
    Tensor b3 = view_of(be, 0, {1, K, N}, {0, bk, bn});
    Tensor o3 = out.reshape_view({1, rows, N});
    backend.gemm(a3, b3, no_bias, o3, GemmArgs{});
    return out;
  }
  if (dims.empty()) dims.push_back({1, 0, 0});
  // the innermost collapsed batch dim goes to the kernel; any outer ones are looped here
  const BatchDim inner = dims.back();
  int64_t outer = 1;
  for (size_t i = 0; i + 1 < dims.size(); ++i) outer *= dims[i].size;
  for (int64_t o = 0; o < outer; ++o) {
    int64_t rem = o, off_a = 0, off_b = 0;
    for (int64_t i = static_cast<int64_t>(dims.size()) - 2; i >= 0; --i) {
      const int64_t idx = rem % dims[i].size;
      rem /= dims[i].size;
      off_a += idx * dims[i].sa;
      off_b += idx * dims[i].sb;
    }
    Tensor a3 = view_of(ae, off_a, {inner.size, M, K}, {inner.sa, am, ak});
    Tensor b3 = view_of(be, off_b, {inner.size, K, N}, {inner.sb, bk, bn});
    Tensor o3 = view_of(out, o * inner.size * M * N, {inner.size, M, N}, {M * N, N, 1});
    backend.gemm(a3, b3, no_bias, o3, GemmArgs{});
  }
  return out;
}

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias, Activation act) {
  const std::string what = "linear: input " + shape_str(x.shape) + ", weight " + shape_str(weight.shape);
  if (x.dim() < 1) throw std::invalid_argument(what + ": the input needs at least 1 dimension");
  if (weight.dim() != 2) throw std::invalid_argument(what + ": the weight must be 2-D [out_features, in_features]");
  if (!is_compute_float(x.dtype) || !is_compute_float(weight.dtype))
    throw std::invalid_argument(what + ": input and weight must be float32/bfloat16/float16, got " +
                                dtype_name(x.dtype) + " and " + dtype_name(weight.dtype));
  if (x.device() != weight.device())
    throw std::invalid_argument(what + ": input and weight are on different devices (" + x.device().str() + " and " +
                                weight.device().str() + ")");
  const int64_t N = weight.shape[0], K = weight.shape[1];
  if (x.size(-1) != K)
    throw std::invalid_argument(what + ": input features " + std::to_string(x.size(-1)) +
                                " differ from the weight's in_features " + std::to_string(K));
  if (bias.defined()) {
    if (bias.dim() != 1 || bias.shape[0] != N)
      throw std::invalid_argument(what + ": bias " + shape_str(bias.shape) + " must be [" + std::to_string(N) + "]");
    if (!is_compute_float(bias.dtype))
      throw std::invalid_argument(what + ": bias must be a float tensor, got " + bias.describe());
    if (bias.device() != x.device()) throw std::invalid_argument(what + ": bias is on a different device");
  }
  if (static_cast<int32_t>(act) < 0 || static_cast<int32_t>(act) > static_cast<int32_t>(Activation::Relu))
    throw std::invalid_argument(what + ": unknown activation " + std::to_string(static_cast<int32_t>(act)));
  Shape out_shape(x.shape.begin(), x.shape.end() - 1);
  const int64_t M = shape_numel(out_shape);
  out_shape.push_back(N);
  Tensor out = Tensor::empty(out_shape, x.dtype, x.device());
  if (M == 0 || N == 0) return out;
  Tensor x2 = reshape(x, {M, K});
  Tensor a3 = x2.unsqueeze(0);
  Tensor b3 = weight.transpose(0, 1).unsqueeze(0);
  Tensor o3 = out.reshape_view({1, M, N});
  GemmArgs args;
  args.act = act;
  backend_for(x.device()).gemm(a3, b3, bias, o3, args);
  return out;
}

std::pair<Tensor, Tensor> attention(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
                                    const AttentionArgs& args_in, bool return_lse) {
  const std::string what = "attention: q " + shape_str(q_in.shape) + ", k " + shape_str(k_in.shape) + ", v " +
                           shape_str(v_in.shape);
  if (q_in.dim() != 4 || k_in.dim() != 4 || v_in.dim() != 4)
    throw std::invalid_argument(what + ": q, k and v must be 4-D [batch, heads, length, head_dim]");
  for (const Tensor* t : {&q_in, &k_in, &v_in})
    if (!is_compute_float(t->dtype))
      throw std::invalid_argument(what + ": q, k and v must be float32/bfloat16/float16, got " + t->describe());
  if (q_in.device() != k_in.device() || q_in.device() != v_in.device())
    throw std::invalid_argument(what + ": q, k and v are on different devices");
  const int64_t B = q_in.shape[0], H = q_in.shape[1], Lq = q_in.shape[2], D = q_in.shape[3];
  const int64_t Hk = k_in.shape[1], Lk = k_in.shape[2], Dv = v_in.shape[3];
  if (k_in.shape[0] != B || v_in.shape[0] != B)
    throw std::invalid_argument(what + ": batch sizes differ");
  if (k_in.shape[3] != D) throw std::invalid_argument(what + ": q and k head dims differ");
  if (v_in.shape[1] != Hk || v_in.shape[2] != Lk)
    throw std::invalid_argument(what + ": k and v differ in heads or length");
  if (Hk == 0 || H % Hk != 0)
    throw std::invalid_argument(what + ": query heads " + std::to_string(H) + " are not a multiple of key heads " +
                                std::to_string(Hk));
  if (!std::isfinite(args_in.scale)) throw std::invalid_argument(what + ": scale must be finite");
  auto last_dim_contiguous = [](const Tensor& t) { return t.shape[3] <= 1 || t.strides[3] == 1 ? t : contiguous(t); };
  const Tensor q = last_dim_contiguous(q_in), k = last_dim_contiguous(k_in), v = last_dim_contiguous(v_in);

  AttentionArgs args = args_in;
  if (args.kv_lens.defined()) {
    const Tensor& kl = args.kv_lens;
    if (kl.dtype != DType::I32 || kl.dim() != 1 || kl.shape[0] != B)
      throw std::invalid_argument(what + ": kv_lens must be int32 [" + std::to_string(B) + "], got " + kl.describe());
    Tensor host = contiguous(to_device(kl, Device{}));
    const int32_t* lens = host.ptr<int32_t>();
    for (int64_t b = 0; b < B; ++b)
      if (lens[b] < 0 || lens[b] > Lk)
        throw std::out_of_range(what + ": kv_lens[" + std::to_string(b) + "] = " + std::to_string(lens[b]) +
                                " is outside 0.." + std::to_string(Lk));
    args.kv_lens = kl.device() == q.device() ? contiguous(kl) : to_device(host, q.device());
  }
  if (args.bias.defined()) {
    const Tensor& bias = args.bias;
    if (!is_compute_float(bias.dtype))
      throw std::invalid_argument(what + ": bias must be a float tensor, got " + bias.describe());
    if (bias.device() != q.device()) throw std::invalid_argument(what + ": bias is on a different device");
    const Shape full{B, H, Lq, Lk};
    Shape bs;
    try {
      bs = broadcast_shapes(bias.shape, full);
    } catch (const std::invalid_argument&) {
      bs.clear();
    }
    if (bs != full)
      throw std::invalid_argument(what + ": bias " + shape_str(bias.shape) + " does not broadcast to " +
                                  shape_str(full));
    args.bias = cast(bias, DType::F32).expand(full);
  }

  // stored as [B, Lq, H, Dv] so that out.transpose(1, 2) (the usual next step) is contiguous
  Tensor store = Tensor::empty({B, Lq, H, Dv}, q.dtype, q.device());
  Tensor out = store.permute({0, 2, 1, 3});
  Tensor lse = return_lse ? Tensor::empty({B, H, Lq}, DType::F32, q.device()) : Tensor();
  if (shape_numel(out.shape) == 0 && !(return_lse && lse.numel() > 0)) return {out, lse};
  backend_for(q.device()).attention(q, k, v, out, lse, args);
  return {out, lse};
}

void lora_merge(const Tensor& base, const std::vector<LoraTerm>& terms, Tensor& w) {
  const std::string what = "lora_merge: base " + shape_str(base.shape) + ", out " + shape_str(w.shape);
  if (base.dim() != 2) throw std::invalid_argument(what + ": base must be 2-D [out_features, in_features]");
  if (w.shape != base.shape) throw std::invalid_argument(what + ": out must have base's shape");
  if (!is_compute_float(base.dtype) || !is_compute_float(w.dtype))
    throw std::invalid_argument(what + ": base and out must be float32/bfloat16/float16, got " + base.describe() +
                                " and " + w.describe());
  if (base.device() != w.device()) throw std::invalid_argument(what + ": base and out are on different devices");
  for (size_t i = 0; i < w.shape.size(); ++i)
    if (w.strides[i] == 0 && w.shape[i] > 1)
      throw std::invalid_argument(what + ": out is an expanded (broadcast) view");
  if (w.storage == base.storage && (w.offset != base.offset || w.strides != base.strides || w.dtype != base.dtype)) {
    // out must be base itself or not overlap it at all
    auto extent = [](const Tensor& t) {
      int64_t hi = 0;
      for (size_t i = 0; i < t.shape.size(); ++i) hi += (t.shape[i] - 1) * t.strides[i];
      return std::make_pair(t.offset, t.offset + (hi + 1) * static_cast<int64_t>(t.itemsize()));
    };
    const auto eb = extent(base), ew = extent(w);
    if (eb.first < ew.second && ew.first < eb.second)
      throw std::invalid_argument(what + ": out partially overlaps base (it must be base itself or separate memory)");
  }
  const int64_t O = base.shape[0], I = base.shape[1];
  for (size_t t = 0; t < terms.size(); ++t) {
    const LoraTerm& term = terms[t];
    const std::string which = what + ": delta " + std::to_string(t) + " (up " + shape_str(term.up.shape) +
                              ", down " + shape_str(term.down.shape) + ")";
    if (term.up.dim() != 2 || term.down.dim() != 2)
      throw std::invalid_argument(which + ": up must be [out, rank] and down [rank, in]");
    if (term.up.shape[0] != O || term.down.shape[1] != I || term.up.shape[1] != term.down.shape[0])
      throw std::invalid_argument(which + ": shapes do not give a [" + std::to_string(O) + ", " +
                                  std::to_string(I) + "] product");
    if (!is_compute_float(term.up.dtype) || !is_compute_float(term.down.dtype))
      throw std::invalid_argument(which + ": up and down must be float tensors");
    if (term.up.device() != base.device() || term.down.device() != base.device())
      throw std::invalid_argument(which + ": on a different device than base");
    if (!std::isfinite(term.scale)) throw std::invalid_argument(which + ": scale must be finite");
  }
  backend_for(base.device()).lora_merge(base, terms, w);
}

}  // namespace nd::ops
