#include "nccl_comm.h"

#include <dlfcn.h>

#include <mutex>
#include <stdexcept>
#include <vector>

#include "../core/backend.h"
#include "../core/cuda_loader.h"

namespace nd::parallel {

namespace {

// ---- the subset of nccl.h used here (ABI-stable since NCCL 2.0) ----
using ncclComm_t = void*;
struct ncclUniqueId {
  char internal[kNcclUniqueIdBytes];
};
using ncclResult_t = int;  // 0 = ncclSuccess
enum ncclDataType_t : int { ncclUint8 = 1, ncclInt32 = 2, ncclUint32 = 3, ncclInt64 = 4, ncclFloat16 = 6, ncclFloat32 = 7, ncclBfloat16 = 9 };
enum ncclRedOp_t : int { ncclSum = 0 };
using cudaStream_t = void*;

struct NcclApi {
  ncclResult_t (*GetVersion)(int*);
  ncclResult_t (*GetUniqueId)(ncclUniqueId*);
  ncclResult_t (*CommInitRank)(ncclComm_t*, int, ncclUniqueId, int);
  ncclResult_t (*CommDestroy)(ncclComm_t);
  ncclResult_t (*CommAbort)(ncclComm_t);
  const char* (*GetErrorString)(ncclResult_t);
  ncclResult_t (*AllReduce)(const void*, void*, size_t, int, int, ncclComm_t, cudaStream_t);
  ncclResult_t (*Broadcast)(const void*, void*, size_t, int, int, ncclComm_t, cudaStream_t);
  ncclResult_t (*AllGather)(const void*, void*, size_t, int, ncclComm_t, cudaStream_t);
  ncclResult_t (*Send)(const void*, size_t, int, int, ncclComm_t, cudaStream_t);
  ncclResult_t (*Recv)(void*, size_t, int, int, ncclComm_t, cudaStream_t);
  ncclResult_t (*GroupStart)();
  ncclResult_t (*GroupEnd)();
};

NcclApi g_api{};
NcclAvailability g_avail;

NcclAvailability load() {
  NcclAvailability a;
  a.path = find_nccl();
  if (a.path.empty()) {
    a.reason = "libnccl.so.2 was not found (install NCCL, e.g. the nvidia-nccl-cu12 wheel, or set ND_NCCL_PATH)";
    return a;
  }
  void* h = dlopen(a.path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    const char* e = dlerror();
    a.reason = "loading " + a.path + " failed: " + (e ? e : "unknown dlopen error");
    return a;
  }
  struct Sym {
    const char* name;
    void** slot;
  };
  const Sym syms[] = {
      {"ncclGetVersion", reinterpret_cast<void**>(&g_api.GetVersion)},
      {"ncclGetUniqueId", reinterpret_cast<void**>(&g_api.GetUniqueId)},
      {"ncclCommInitRank", reinterpret_cast<void**>(&g_api.CommInitRank)},
      {"ncclCommDestroy", reinterpret_cast<void**>(&g_api.CommDestroy)},
      {"ncclCommAbort", reinterpret_cast<void**>(&g_api.CommAbort)},
      {"ncclGetErrorString", reinterpret_cast<void**>(&g_api.GetErrorString)},
      {"ncclAllReduce", reinterpret_cast<void**>(&g_api.AllReduce)},
      {"ncclBroadcast", reinterpret_cast<void**>(&g_api.Broadcast)},
      {"ncclAllGather", reinterpret_cast<void**>(&g_api.AllGather)},
      {"ncclSend", reinterpret_cast<void**>(&g_api.Send)},
      {"ncclRecv", reinterpret_cast<void**>(&g_api.Recv)},
      {"ncclGroupStart", reinterpret_cast<void**>(&g_api.GroupStart)},
      {"ncclGroupEnd", reinterpret_cast<void**>(&g_api.GroupEnd)},
  };
  for (const Sym& s : syms) {
    *s.slot = dlsym(h, s.name);
    if (!*s.slot) {
      a.reason = a.path + " lacks " + s.name + " (NCCL 2.7 or newer is needed)";
      return a;
    }
  }
  if (g_api.GetVersion(&a.version) != 0) {
    a.reason = "ncclGetVersion failed";
    return a;
  }
  a.available = true;
  return a;
}

const NcclApi& api() {
  static std::once_flag once;
  std::call_once(once, [] { g_avail = load(); });
  if (!g_avail.available) throw std::runtime_error("NCCL is not available: " + g_avail.reason);
  return g_api;
}

void check(ncclResult_t r, const char* what) {
  if (r == 0) return;
  throw std::runtime_error(std::string("NCCL ") + what + " failed: " + g_api.GetErrorString(r) + " (error " +
                           std::to_string(r) + ")");
}

int nccl_dtype(DType t) {
  switch (t) {
    case DType::F32: return ncclFloat32;
    case DType::F16: return ncclFloat16;
    case DType::BF16: return ncclBfloat16;
    case DType::I32: return ncclInt32;
    case DType::I64: return ncclInt64;
    case DType::U8: return ncclUint8;
    case DType::F8E4M3: break;
  }
  throw std::invalid_argument(std::string("NCCL allReduce does not sum ") + dtype_name(t) + " tensors");
}

}  // namespace

NcclAvailability nccl_availability() {
  try {
    api();
  } catch (const std::exception&) {
    // reported through the fields
  }
  return g_avail;
}

NcclUniqueId NcclComm::unique_id() {
  const NcclApi& a = api();
  ncclUniqueId id;
  check(a.GetUniqueId(&id), "ncclGetUniqueId");
  NcclUniqueId out;
  std::copy(id.internal, id.internal + kNcclUniqueIdBytes, out.begin());
  return out;
}

NcclComm::NcclComm(const NcclUniqueId& id, int rank, int world_size, int device)
    : rank_(rank), world_(world_size), device_(device) {
  const NcclApi& a = api();
  if (world_size < 1 || rank < 0 || rank >= world_size)
    throw std::invalid_argument("NCCL communicator: rank " + std::to_string(rank) + " is outside [0, " +
                                std::to_string(world_size) + ")");
  require_cuda_backend();
  // Makes the device current on this thread (NCCL binds the communicator to the current device).
  if (!cuda_compute_stream(device))
    throw std::runtime_error("NCCL communicator: the CUDA library does not expose its compute stream");
  ncclUniqueId uid;
  std::copy(id.begin(), id.end(), uid.internal);
  ncclComm_t c = nullptr;
  check(a.CommInitRank(&c, world_size, uid, rank), "ncclCommInitRank");
  comm_ = c;
  barrier_buf_ = cuda_backend()->allocate(4, Device{DeviceType::CUDA, device});
}

NcclComm::~NcclComm() { destroy(false); }

void NcclComm::destroy(bool abort) {
  if (!comm_) return;
  if (abort)
    g_api.CommAbort(comm_);
  else
    g_api.CommDestroy(comm_);
  comm_ = nullptr;
  if (barrier_buf_) cuda_backend()->deallocate(barrier_buf_, 4, Device{DeviceType::CUDA, device_});
  barrier_buf_ = nullptr;
}

void* NcclComm::stream() const {
  if (!comm_) throw std::runtime_error("NCCL communicator: it was destroyed");
  return cuda_compute_stream(device_);
}

void NcclComm::all_gather(const void* send, void* recv, size_t bytes) {
  void* s = stream();
  check(g_api.AllGather(send, recv, bytes, ncclUint8, comm_, s), "ncclAllGather");
}

void NcclComm::all_to_all(const void* send, void* recv, size_t bytes) {
  void* s = stream();
  // NCCL has no all-to-all: one grouped send and receive per peer.
  check(g_api.GroupStart(), "ncclGroupStart");
  ncclResult_t r = 0;
  for (int p = 0; p < world_ && r == 0; ++p) {
    r = g_api.Send(static_cast<const char*>(send) + p * bytes, bytes, ncclUint8, p, comm_, s);
    if (r == 0) r = g_api.Recv(static_cast<char*>(recv) + p * bytes, bytes, ncclUint8, p, comm_, s);
  }
  ncclResult_t end = g_api.GroupEnd();
  check(r, "ncclSend/ncclRecv (all-to-all)");
  check(end, "ncclGroupEnd");
}

void NcclComm::all_reduce_sum(const void* send, void* recv, size_t count, DType dtype) {
  void* s = stream();
  check(g_api.AllReduce(send, recv, count, nccl_dtype(dtype), ncclSum, comm_, s), "ncclAllReduce");
}

void NcclComm::broadcast(void* data, size_t bytes, int root) {
  void* s = stream();
  check(g_api.Broadcast(data, data, bytes, ncclUint8, root, comm_, s), "ncclBroadcast");
}

void NcclComm::send(const void* data, size_t bytes, int peer) {
  void* s = stream();
  check(g_api.Send(data, bytes, ncclUint8, peer, comm_, s), "ncclSend");
}

void NcclComm::recv(void* data, size_t bytes, int peer) {
  void* s = stream();
  check(g_api.Recv(data, bytes, ncclUint8, peer, comm_, s), "ncclRecv");
}

void NcclComm::send_recv(const void* send, size_t send_bytes, int dst, void* recv, size_t recv_bytes, int src) {
  void* s = stream();
  check(g_api.GroupStart(), "ncclGroupStart");
  ncclResult_t r = g_api.Send(send, send_bytes, ncclUint8, dst, comm_, s);
  if (r == 0) r = g_api.Recv(recv, recv_bytes, ncclUint8, src, comm_, s);
  ncclResult_t end = g_api.GroupEnd();
  check(r, "ncclSend/ncclRecv");
  check(end, "ncclGroupEnd");
}

void NcclComm::barrier() {
  void* s = stream();
  check(g_api.AllReduce(barrier_buf_, barrier_buf_, 1, ncclInt32, ncclSum, comm_, s), "ncclAllReduce (barrier)");
  cuda_backend()->synchronize(Device{DeviceType::CUDA, device_});
}

}  // namespace nd::parallel
