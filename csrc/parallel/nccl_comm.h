// NCCL communicator: libnccl.so.2 is opened with dlopen at run time (no NCCL headers or link
// dependency; the few types and entry points used are declared here). Every operation runs on the
// compute stream of the rank's CUDA device, so it is ordered with the kernels before and after it.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

#include "../core/dtype.h"

namespace nd::parallel {

struct NcclAvailability {
  bool available = false;
  std::string path;    // the library found ("" when none)
  int version = 0;     // e.g. 22105 for 2.21.5
  std::string reason;  // why it is not usable ("" when it is)
};

// Finds and loads NCCL once per process; never throws.
NcclAvailability nccl_availability();

constexpr size_t kNcclUniqueIdBytes = 128;
using NcclUniqueId = std::array<uint8_t, kNcclUniqueIdBytes>;

class NcclComm {
 public:
  // A fresh id for a new communicator (made by one rank, shared with the others).
  static NcclUniqueId unique_id();
  // Joins the communicator `id` as `rank` of `world_size` on CUDA device `device`; blocks until all ranks joined.
  NcclComm(const NcclUniqueId& id, int rank, int world_size, int device);
  ~NcclComm();
  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;

  int rank() const { return rank_; }
  int world_size() const { return world_; }
  int device() const { return device_; }

  // Same contracts as ShmComm's (device pointers; bytes per rank).
  void all_gather(const void* send, void* recv, size_t bytes);
  void all_to_all(const void* send, void* recv, size_t bytes);
  void all_reduce_sum(const void* send, void* recv, size_t count, DType dtype);
  void broadcast(void* data, size_t bytes, int root);
  void send(const void* data, size_t bytes, int peer);
  void recv(void* data, size_t bytes, int peer);
  void send_recv(const void* send, size_t send_bytes, int dst, void* recv, size_t recv_bytes, int src);
  // All ranks reach this point and the device's queued work is done.
  void barrier();
  // Frees the communicator; abort = true does not wait for pending operations (after a failure).
  void destroy(bool abort);

 private:
  void* stream() const;
  void* comm_ = nullptr;
  int rank_ = 0, world_ = 0, device_ = 0;
  void* barrier_buf_ = nullptr;  // 4 bytes of device memory
};

}  // namespace nd::parallel
