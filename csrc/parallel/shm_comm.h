// A communicator between the processes of one machine over a shared-memory file (e.g. in /dev/shm):
// each rank owns a data slot that the others read, collectives synchronise on barriers and
// point-to-point messages on per-pair counters, all waiting through futexes. Data moves with one
// copy into the sender's slot and one copy out of it; large messages go through in slot-sized
// chunks. A wait that sees a peer process gone (or the timeout pass) throws instead of hanging.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "../core/dtype.h"

namespace nd::parallel {

struct ShmLayout;

class ShmComm {
 public:
  static constexpr int kMaxRanks = 256;
  static constexpr int kMaxGroups = 1024;

  // Maps the file at `path` (created, sized and zero-filled by whichever rank comes first),
  // registers this rank and waits until all `world_size` ranks have attached; rank 0 then
  // unlinks the file so nothing is left behind. Throws on bad arguments, I/O errors and timeout.
  ShmComm(const std::string& path, int rank, int world_size, size_t slot_bytes, double timeout_s);
  ~ShmComm();
  ShmComm(const ShmComm&) = delete;
  ShmComm& operator=(const ShmComm&) = delete;

  int rank() const { return rank_; }
  int world_size() const { return world_; }
  size_t slot_bytes() const { return slot_bytes_; }

  // Reserves `count` consecutive group ids (shared counter; group 0 is the world) and returns the first.
  int alloc_group_ids(int count);
  // Declares the members (world ranks, in group order) of group `id` in this process. Every member
  // declares the same list; this rank must be one of them.
  void define_group(int id, const std::vector<int>& members);
  int group_size(int id) const;

  // ---- collectives over a group (every member calls them in the same order) ----
  void barrier(int group);
  // recv holds members x bytes: member i's buffer at i * bytes.
  void all_gather(int group, const void* send, void* recv, size_t bytes);
  // send and recv hold members x bytes: block j of send goes to member j, block i of recv comes from
  // member i. A block may be interleaved with the others in runs (a tensor split along an inner dim):
  // with k runs of r = bytes / k, byte p of block j lies at ((p / r) * members + j) * r + p % r; k = 1
  // is one contiguous block after the other.
  void all_to_all(int group, const void* send, void* recv, size_t bytes, size_t send_runs = 1, size_t recv_runs = 1);
  // recv[i] = sum over members (in member order) of send[i]; send may equal recv.
  void all_reduce_sum(int group, const void* send, void* recv, size_t count, DType dtype);
  // Member `root`'s buffer is copied into everyone's buffer.
  void broadcast(int group, void* data, size_t bytes, int root);

  // ---- point to point (world ranks) ----
  void send(const void* data, size_t bytes, int dst);
  void recv(void* data, size_t bytes, int src);
  // Sends to dst and receives from src at the same time (a ring step without deadlock).
  void send_recv(const void* send, size_t send_bytes, int dst, void* recv, size_t recv_bytes, int src);

 private:
  struct Group {
    std::vector<int> members;
    int index = -1;  // this rank's position
  };
  const Group& group(int id, const char* op) const;
  void arrive(int group_id, const Group& g, const char* what);
  void wait_word(void* word, void* sleepers, uint32_t until_not, const int* peers, int npeers, const std::string& what);
  void check_op(int group_id, const Group& g, uint32_t kind, uint64_t bytes, int32_t extra, const char* name);
  char* slot(int world_rank) const;
  void unmap();
  void post_chunk(int dst, const void* src, size_t n, uint64_t total);
  void take_chunk(int src, void* dst, size_t n, uint64_t expected_total, bool first);
  void wait_ack(int dst, const std::string& what);

  std::string path_;
  int rank_ = 0, world_ = 0;
  size_t slot_bytes_ = 0, map_bytes_ = 0;
  double timeout_s_ = 0;
  char* base_ = nullptr;
  ShmLayout* layout_ = nullptr;
  std::vector<Group> groups_;
};

}  // namespace nd::parallel
