// Bindings of the communicators (csrc/parallel): the shared-memory one for CPU ranks and NCCL for
// CUDA ranks. Communicators are kept in a table and named by an integer id; tensors in and out
// must be contiguous and on the communicator's device (lib/parallel prepares them).
#include <map>
#include <memory>

#include "../parallel/nccl_comm.h"
#include "../parallel/shm_comm.h"
#include "common.h"

namespace nd::napi {

namespace {

std::map<int64_t, std::unique_ptr<parallel::ShmComm>> g_shm;
std::map<int64_t, std::unique_ptr<parallel::NcclComm>> g_nccl;
int64_t g_next_id = 1;

parallel::ShmComm& shm(const Napi::CallbackInfo& info) {
  auto it = g_shm.find(arg_int(info, 0, "comm"));
  if (it == g_shm.end()) throw std::invalid_argument("the shared-memory communicator is closed");
  return *it->second;
}

parallel::NcclComm& nccl(const Napi::CallbackInfo& info) {
  auto it = g_nccl.find(arg_int(info, 0, "comm"));
  if (it == g_nccl.end()) throw std::invalid_argument("the NCCL communicator is closed");
  return *it->second;
}

// A contiguous tensor on `device` (CUDA index -1: the CPU).
const Tensor& buffer(const Napi::CallbackInfo& info, size_t i, const char* name, const char* op, int cuda_device) {
  const Tensor& t = arg_tensor(info, i, name);
  const Device want = cuda_device < 0 ? Device{} : Device{DeviceType::CUDA, cuda_device};
  if (t.device() != want)
    throw std::invalid_argument(std::string(op) + ": " + name + " is on " + t.device().str() + ", the communicator on " +
                                want.str());
  if (!t.is_contiguous()) throw std::invalid_argument(std::string(op) + ": " + name + " must be contiguous");
  return t;
}

void same_dtype(const Tensor& a, const Tensor& b, const char* op) {
  if (a.dtype != b.dtype)
    throw std::invalid_argument(std::string(op) + ": send is " + a.describe() + " but recv is " + b.describe());
}

void expect_bytes(const Tensor& t, size_t bytes, const char* name, const char* op) {
  if (t.nbytes() != bytes)
    throw std::invalid_argument(std::string(op) + ": " + name + " " + t.describe() + " holds " + std::to_string(t.nbytes()) +
                                " bytes, expected " + std::to_string(bytes));
}

}  // namespace

ND_BINDINGS(bind_parallel) {
  // ---- shared memory ----
  export_fn(env, exports, "shmOpen", [](const Napi::CallbackInfo& info) {
    auto c = std::make_unique<parallel::ShmComm>(arg_string(info, 0, "path"), static_cast<int>(arg_int(info, 1, "rank")),
                                                 static_cast<int>(arg_int(info, 2, "worldSize")),
                                                 static_cast<size_t>(arg_int(info, 3, "slotBytes")),
                                                 arg_number(info, 4, "timeoutSeconds"));
    const int64_t id = g_next_id++;
    g_shm[id] = std::move(c);
    return Napi::Number::New(info.Env(), static_cast<double>(id));
  });
  export_fn(env, exports, "shmClose", [](const Napi::CallbackInfo& info) {
    g_shm.erase(arg_int(info, 0, "comm"));
    return info.Env().Undefined();
  });
  export_fn(env, exports, "shmAllocGroupIds", [](const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), shm(info).alloc_group_ids(static_cast<int>(arg_int(info, 1, "count"))));
  });
  export_fn(env, exports, "shmDefineGroup", [](const Napi::CallbackInfo& info) {
    std::vector<int64_t> m = arg_int_list(info, 2, "members");
    shm(info).define_group(static_cast<int>(arg_int(info, 1, "group")), std::vector<int>(m.begin(), m.end()));
    return info.Env().Undefined();
  });
  export_fn(env, exports, "shmBarrier", [](const Napi::CallbackInfo& info) {
    shm(info).barrier(static_cast<int>(arg_int(info, 1, "group")));
    return info.Env().Undefined();
  });
  export_fn(env, exports, "shmAllGather", [](const Napi::CallbackInfo& info) {
    auto& c = shm(info);
    const int g = static_cast<int>(arg_int(info, 1, "group"));
    const Tensor& s = buffer(info, 2, "send", "allGather", -1);
    const Tensor& r = buffer(info, 3, "recv", "allGather", -1);
    same_dtype(s, r, "allGather");
    expect_bytes(r, s.nbytes() * c.group_size(g), "recv", "allGather");
    c.all_gather(g, s.data(), r.data(), s.nbytes());
    return info.Env().Undefined();
  });
  export_fn(env, exports, "shmAllToAll", [](const Napi::CallbackInfo& info) {
    auto& c = shm(info);
    const int g = static_cast<int>(arg_int(info, 1, "group"));
    const Tensor& s = buffer(info, 2, "send", "allToAll", -1);
    const Tensor& r = buffer(info, 3, "recv", "allToAll", -1);
    same_dtype(s, r, "allToAll");
    expect_bytes(r, s.nbytes(), "recv", "allToAll");
    const size_t n = static_cast<size_t>(c.group_size(g));
    if (s.nbytes() % n) throw std::invalid_argument("allToAll: send does not split into " + std::to_string(n) + " equal blocks");
    c.all_to_all(g, s.data(), r.data(), s.nbytes() / n, static_cast<size_t>(arg_int(info, 4, "sendRuns")),
                 static_cast<size_t>(arg_int(info, 5, "recvRuns")));
    return info.Env().Undefined();
  });
  export_fn(env, exports, "shmAllReduce", [](const Napi::CallbackInfo& info) {
    auto& c = shm(info);
    const Tensor& s = buffer(info, 2, "send", "allReduce", -1);
    const Tensor& r = buffer(info, 3, "recv", "allReduce", -1);
    same_dtype(s, r, "allReduce");
    expect_bytes(r, s.nbytes(), "recv", "allReduce");
    c.all_reduce_sum(static_cast<int>(arg_int(info, 1, "group")), s.data(), r.data(), static_cast<size_t>(s.numel()), s.dtype);
    return info.Env().Undefined();
  });
  export_fn(env, exports, "shmBroadcast", [](const Napi::CallbackInfo& info) {
    const Tensor& t = buffer(info, 2, "tensor", "broadcast", -1);
    shm(info).broadcast(static_cast<int>(arg_int(info, 1, "group")), t.data(), t.nbytes(),
                        static_cast<int>(arg_int(info, 3, "root")));
    return info.Env().Undefined();
  });
  export_fn(env, exports, "shmSend", [](const Napi::CallbackInfo& info) {
    const Tensor& t = buffer(info, 1, "tensor", "send", -1);
    shm(info).send(t.data(), t.nbytes(), static_cast<int>(arg_int(info, 2, "dst")));
    return info.Env().Undefined();
  });
  export_fn(env, exports, "shmRecv", [](const Napi::CallbackInfo& info) {
    const Tensor& t = buffer(info, 1, "tensor", "recv", -1);
    shm(info).recv(t.data(), t.nbytes(), static_cast<int>(arg_int(info, 2, "src")));
    return info.Env().Undefined();
  });
  export_fn(env, exports, "shmSendRecv", [](const Napi::CallbackInfo& info) {
    const Tensor& s = buffer(info, 1, "send", "sendRecv", -1);
    const Tensor& r = buffer(info, 3, "recv", "sendRecv", -1);
    shm(info).send_recv(s.data(), s.nbytes(), static_cast<int>(arg_int(info, 2, "dst")), r.data(), r.nbytes(),
                        static_cast<int>(arg_int(info, 4, "src")));
    return info.Env().Undefined();
  });

  // ---- NCCL ----
  export_fn(env, exports, "ncclInfo", [](const Napi::CallbackInfo& info) {
    const parallel::NcclAvailability a = parallel::nccl_availability();
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("available", a.available);
    o.Set("path", a.path.empty() ? info.Env().Null() : Napi::String::New(info.Env(), a.path));
    o.Set("version", a.version);
    o.Set("reason", a.reason);
    return o;
  });
  export_fn(env, exports, "ncclUniqueId", [](const Napi::CallbackInfo& info) {
    const parallel::NcclUniqueId id = parallel::NcclComm::unique_id();
    auto buf = Napi::Uint8Array::New(info.Env(), id.size());
    std::copy(id.begin(), id.end(), buf.Data());
    return buf;
  });
  export_fn(env, exports, "ncclOpen", [](const Napi::CallbackInfo& info) {
    if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
      throw std::invalid_argument("ncclOpen: id must be a Uint8Array");
    auto bytes = info[0].As<Napi::Uint8Array>();
    if (bytes.ElementLength() != parallel::kNcclUniqueIdBytes)
      throw std::invalid_argument("ncclOpen: id must hold " + std::to_string(parallel::kNcclUniqueIdBytes) + " bytes");
    parallel::NcclUniqueId id;
    std::copy(bytes.Data(), bytes.Data() + id.size(), id.begin());
    auto c = std::make_unique<parallel::NcclComm>(id, static_cast<int>(arg_int(info, 1, "rank")),
                                                  static_cast<int>(arg_int(info, 2, "worldSize")),
                                                  static_cast<int>(arg_int(info, 3, "device")));
    const int64_t cid = g_next_id++;
    g_nccl[cid] = std::move(c);
    return Napi::Number::New(info.Env(), static_cast<double>(cid));
  });
  export_fn(env, exports, "ncclClose", [](const Napi::CallbackInfo& info) {
    auto it = g_nccl.find(arg_int(info, 0, "comm"));
    if (it != g_nccl.end()) {
      it->second->destroy(arg_bool(info, 1, "abort"));
      g_nccl.erase(it);
    }
    return info.Env().Undefined();
  });
  export_fn(env, exports, "ncclBarrier", [](const Napi::CallbackInfo& info) {
    nccl(info).barrier();
    return info.Env().Undefined();
  });
  export_fn(env, exports, "ncclAllGather", [](const Napi::CallbackInfo& info) {
    auto& c = nccl(info);
    const Tensor& s = buffer(info, 1, "send", "allGather", c.device());
    const Tensor& r = buffer(info, 2, "recv", "allGather", c.device());
    same_dtype(s, r, "allGather");
    expect_bytes(r, s.nbytes() * c.world_size(), "recv", "allGather");
    c.all_gather(s.data(), r.data(), s.nbytes());
    return info.Env().Undefined();
  });
  export_fn(env, exports, "ncclAllToAll", [](const Napi::CallbackInfo& info) {
    auto& c = nccl(info);
    const Tensor& s = buffer(info, 1, "send", "allToAll", c.device());
    const Tensor& r = buffer(info, 2, "recv", "allToAll", c.device());
    same_dtype(s, r, "allToAll");
    expect_bytes(r, s.nbytes(), "recv", "allToAll");
    const size_t n = static_cast<size_t>(c.world_size());
    if (s.nbytes() % n) throw std::invalid_argument("allToAll: send does not split into " + std::to_string(n) + " equal blocks");
    c.all_to_all(s.data(), r.data(), s.nbytes() / n);
    return info.Env().Undefined();
  });
  export_fn(env, exports, "ncclAllReduce", [](const Napi::CallbackInfo& info) {
    auto& c = nccl(info);
    const Tensor& s = buffer(info, 1, "send", "allReduce", c.device());
    const Tensor& r = buffer(info, 2, "recv", "allReduce", c.device());
    same_dtype(s, r, "allReduce");
    expect_bytes(r, s.nbytes(), "recv", "allReduce");
    c.all_reduce_sum(s.data(), r.data(), static_cast<size_t>(s.numel()), s.dtype);
    return info.Env().Undefined();
  });
  export_fn(env, exports, "ncclBroadcast", [](const Napi::CallbackInfo& info) {
    auto& c = nccl(info);
    const Tensor& t = buffer(info, 1, "tensor", "broadcast", c.device());
    const int root = static_cast<int>(arg_int(info, 2, "root"));
    if (root < 0 || root >= c.world_size()) throw std::invalid_argument("broadcast: root " + std::to_string(root) + " is not a rank");
    c.broadcast(t.data(), t.nbytes(), root);
    return info.Env().Undefined();
  });
  export_fn(env, exports, "ncclSend", [](const Napi::CallbackInfo& info) {
    auto& c = nccl(info);
    const Tensor& t = buffer(info, 1, "tensor", "send", c.device());
    c.send(t.data(), t.nbytes(), static_cast<int>(arg_int(info, 2, "peer")));
    return info.Env().Undefined();
  });
  export_fn(env, exports, "ncclRecv", [](const Napi::CallbackInfo& info) {
    auto& c = nccl(info);
    const Tensor& t = buffer(info, 1, "tensor", "recv", c.device());
    c.recv(t.data(), t.nbytes(), static_cast<int>(arg_int(info, 2, "peer")));
    return info.Env().Undefined();
  });
  export_fn(env, exports, "ncclSendRecv", [](const Napi::CallbackInfo& info) {
    auto& c = nccl(info);
    const Tensor& s = buffer(info, 1, "send", "sendRecv", c.device());
    const Tensor& r = buffer(info, 3, "recv", "sendRecv", c.device());
    c.send_recv(s.data(), s.nbytes(), static_cast<int>(arg_int(info, 2, "dst")), r.data(), r.nbytes(),
                static_cast<int>(arg_int(info, 4, "src")));
    return info.Env().Undefined();
  });
}

}  // namespace nd::napi
