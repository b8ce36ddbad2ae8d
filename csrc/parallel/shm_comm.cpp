#include "shm_comm.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <stdexcept>
#include <thread>

#include "../core/threadpool.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define ND_CPU_RELAX() _mm_pause()
#else
#define ND_CPU_RELAX() std::this_thread::yield()
#endif

namespace nd::parallel {

// ---- the shared layout (every field starts zeroed: the file is created empty and sized) ----

struct alignas(64) WaitWord {
  std::atomic<uint32_t> value;
  std::atomic<uint32_t> sleepers;  // processes blocked in FUTEX_WAIT on value
  std::atomic<uint64_t> size;      // point to point: total bytes of the message being posted
  std::atomic<uint32_t> error;     // point to point: the receiver rejected the message
};

struct alignas(64) BarrierWord {
  std::atomic<uint32_t> count;
  std::atomic<uint32_t> generation;
  std::atomic<uint32_t> sleepers;
};

// What a rank is doing in its current collective, compared between members to catch mismatched calls.
struct alignas(64) OpDesc {
  std::atomic<uint64_t> bytes;
  std::atomic<uint32_t> kind;
  std::atomic<int32_t> extra;
};

struct Header {
  std::atomic<uint32_t> attached;
  std::atomic<uint32_t> next_group;  // ids handed out after the world group (0)
  std::atomic<int32_t> pids[ShmComm::kMaxRanks];
  std::atomic<uint32_t> closed[ShmComm::kMaxRanks];  // the rank closed its communicator
};

struct PairWords {
  WaitWord posted;  // written by the sender
  WaitWord acked;   // written by the receiver
};

struct ShmLayout {
  Header* header;
  BarrierWord* barriers;  // kMaxGroups
  OpDesc* ops;            // world
  PairWords* pairs;       // world x world, [src * world + dst]
  size_t data_offset;     // the slots: world x slot_bytes
};

namespace {

constexpr size_t kPage = 4096;
constexpr int kSpins = 256;
constexpr size_t kCopyPiece = size_t(1) << 18;  // parallel copies move pieces of 256 KiB

enum OpKind : uint32_t { kBarrier = 1, kAllGather, kAllToAll, kAllReduce, kBroadcast };

size_t round_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

struct Offsets {
  size_t barriers, ops, pairs, data, total;
};

Offsets plan(int world, size_t slot_bytes) {
  Offsets o{};
  size_t off = round_up(sizeof(Header), kPage);
  o.barriers = off;
  off += round_up(sizeof(BarrierWord) * ShmComm::kMaxGroups, kPage);
  o.ops = off;
  off += round_up(sizeof(OpDesc) * world, kPage);
  o.pairs = off;
  off += round_up(sizeof(PairWords) * world * world, kPage);
  o.data = off;
  o.total = off + slot_bytes * world;
  return o;
}

long futex(void* addr, int op, uint32_t val, const timespec* timeout) {
  return syscall(SYS_futex, addr, op, val, timeout, nullptr, 0);
}

void wake_all(std::atomic<uint32_t>& word, std::atomic<uint32_t>& sleepers) {
  if (sleepers.load(std::memory_order_seq_cst) > 0) futex(&word, FUTEX_WAKE, INT_MAX, nullptr);
}

void store_and_wake(std::atomic<uint32_t>& word, std::atomic<uint32_t>& sleepers, uint32_t v) {
  word.store(v, std::memory_order_seq_cst);
  wake_all(word, sleepers);
}

// True when the process is gone or a zombie (exited, not yet reaped by its parent).
bool process_gone(int32_t pid) {
  if (pid <= 0) return true;
  if (::kill(pid, 0) != 0 && errno == ESRCH) return true;
  char path[64];
  std::snprintf(path, sizeof(path), "/proc/%d/stat", pid);
  FILE* f = std::fopen(path, "r");
  if (!f) return false;
  char buf[512];
  size_t n = std::fread(buf, 1, sizeof(buf) - 1, f);
  std::fclose(f);
  buf[n] = 0;
  const char* close_paren = std::strrchr(buf, ')');
  return close_paren && close_paren[1] == ' ' && (close_paren[2] == 'Z' || close_paren[2] == 'X');
}

// Copies several (dst, src, n) ranges, splitting large ones over the thread pool.
struct CopyJob {
  char* dst;
  const char* src;
  size_t n;
};

void run_copies(const std::vector<CopyJob>& jobs) {
  size_t total = 0;
  for (const auto& j : jobs) total += j.n;
  if (total < 4 * kCopyPiece) {
    for (const auto& j : jobs)
      if (j.n) std::memcpy(j.dst, j.src, j.n);
    return;
  }
  std::vector<CopyJob> pieces;
  for (const auto& j : jobs)
    for (size_t off = 0; off < j.n; off += kCopyPiece)
      pieces.push_back({j.dst + off, j.src + off, std::min(kCopyPiece, j.n - off)});
  parallel_for(0, static_cast<int64_t>(pieces.size()), 1, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) std::memcpy(pieces[i].dst, pieces[i].src, pieces[i].n);
  });
}

// out[i] = sum_k ins[k][i], accumulated in member order (the same bits on every rank).
template <class T, class Acc>
void sum_range(void* out, const std::vector<const char*>& ins, size_t begin, size_t end) {
  T* o = static_cast<T*>(out);
  for (size_t i = begin; i < end; ++i) {
    Acc acc = static_cast<Acc>(reinterpret_cast<const T*>(ins[0])[i]);
    for (size_t k = 1; k < ins.size(); ++k) acc = static_cast<Acc>(acc + static_cast<Acc>(reinterpret_cast<const T*>(ins[k])[i]));
    o[i] = static_cast<T>(acc);
  }
}

void sum_range_converted(void* out, const std::vector<const char*>& ins, size_t begin, size_t end, DType dt) {
  for (size_t i = begin; i < end; ++i) {
    float acc = load_as_f32(ins[0], dt, static_cast<int64_t>(i));
    for (size_t k = 1; k < ins.size(); ++k) acc += load_as_f32(ins[k], dt, static_cast<int64_t>(i));
    store_from_f32(out, dt, static_cast<int64_t>(i), acc);
  }
}

void reduce_sum(void* out, const std::vector<const char*>& ins, size_t count, DType dt) {
  parallel_for(0, static_cast<int64_t>(count), 1 << 15, [&](int64_t lo, int64_t hi) {
    const size_t b = static_cast<size_t>(lo), e = static_cast<size_t>(hi);
    switch (dt) {
      case DType::F32: sum_range<float, float>(out, ins, b, e); break;
      // integer sums wrap around like torch's (unsigned arithmetic: no overflow UB)
      case DType::I32: sum_range<uint32_t, uint32_t>(out, ins, b, e); break;
      case DType::I64: sum_range<uint64_t, uint64_t>(out, ins, b, e); break;
      case DType::U8: sum_range<uint8_t, uint32_t>(out, ins, b, e); break;
      case DType::F16:
      case DType::BF16:
      case DType::F8E4M3: sum_range_converted(out, ins, b, e, dt); break;
    }
  });
}

const char* op_name(uint32_t kind) {
  switch (kind) {
    case kBarrier: return "barrier";
    case kAllGather: return "allGather";
    case kAllToAll: return "allToAll";
    case kAllReduce: return "allReduce";
    case kBroadcast: return "broadcast";
  }
  return "nothing";
}

// "allReduce of 64 bytes of float32", "broadcast of 12 bytes from member 1", ...
std::string op_text(uint32_t kind, uint64_t bytes, int32_t extra) {
  std::string s = std::string(op_name(kind)) + " of " + std::to_string(bytes) + " bytes";
  if (kind == kAllReduce) s += std::string(" of ") + dtype_name(static_cast<DType>(extra));
  if (kind == kBroadcast) s += " from member " + std::to_string(extra);
  return s;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

ShmComm::ShmComm(const std::string& path, int rank, int world_size, size_t slot_bytes, double timeout_s)
    : path_(path), rank_(rank), world_(world_size), slot_bytes_(slot_bytes), timeout_s_(timeout_s) {
  if (world_size < 1 || world_size > kMaxRanks)
    throw std::invalid_argument("shared-memory communicator: world size must be in [1, " + std::to_string(kMaxRanks) +
                                "], got " + std::to_string(world_size));
  if (rank < 0 || rank >= world_size)
    throw std::invalid_argument("shared-memory communicator: rank " + std::to_string(rank) + " is outside [0, " +
                                std::to_string(world_size) + ")");
  if (slot_bytes < kPage || slot_bytes % kPage != 0)
    throw std::invalid_argument("shared-memory communicator: the slot size must be a positive multiple of 4096 bytes, got " +
                                std::to_string(slot_bytes));
  if (!(timeout_s > 0)) throw std::invalid_argument("shared-memory communicator: the timeout must be > 0 seconds");

  const Offsets o = plan(world_size, slot_bytes);
  map_bytes_ = o.total;
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) throw std::runtime_error("shared-memory communicator: cannot open " + path + ": " + std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    throw std::runtime_error("shared-memory communicator: cannot stat " + path + ": " + std::strerror(e));
  }
  if (st.st_size == 0) {
    // Size it (at once, for the ranks that open it next), then reserve the pages: on a full tmpfs (a
    // container's small /dev/shm) touching them later would kill the process with SIGBUS instead of
    // failing here with a reason.
    int e = ::ftruncate(fd, static_cast<off_t>(map_bytes_)) == 0 ? 0 : errno;
    if (e == 0) e = ::posix_fallocate(fd, 0, static_cast<off_t>(map_bytes_));
    if (e != 0) {
      ::close(fd);
      ::unlink(path.c_str());
      throw std::runtime_error("shared-memory communicator: cannot reserve " + std::to_string(map_bytes_ >> 20) + " MiB in " +
                               path + ": " + std::strerror(e) +
                               (e == ENOSPC ? " (give the container more shared memory, e.g. docker --shm-size, or lower ND_SHM_SLOT_MB)" : ""));
    }
  } else if (static_cast<size_t>(st.st_size) != map_bytes_) {
    ::close(fd);
    throw std::runtime_error("shared-memory communicator: " + path + " has " + std::to_string(st.st_size) +
                             " bytes, expected " + std::to_string(map_bytes_) +
                             " (the ranks disagree on the world size or the slot size)");
  }
  void* p = ::mmap(nullptr, map_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  int map_errno = errno;
  ::close(fd);
  if (p == MAP_FAILED)
    throw std::runtime_error("shared-memory communicator: cannot map " + path + ": " + std::strerror(map_errno));
  base_ = static_cast<char*>(p);
  layout_ = new ShmLayout{reinterpret_cast<Header*>(base_), reinterpret_cast<BarrierWord*>(base_ + o.barriers),
                          reinterpret_cast<OpDesc*>(base_ + o.ops), reinterpret_cast<PairWords*>(base_ + o.pairs), o.data};

  Header& h = *layout_->header;
  int32_t expected = 0;
  const int32_t me = static_cast<int32_t>(::getpid());
  if (!h.pids[rank].compare_exchange_strong(expected, me)) {
    unmap();
    throw std::runtime_error("shared-memory communicator: rank " + std::to_string(rank) + " of " + path +
                             " is already taken by process " + std::to_string(expected));
  }
  groups_.resize(kMaxGroups);
  Group& world = groups_[0];
  for (int r = 0; r < world_size; ++r) world.members.push_back(r);
  world.index = rank;

  // Wait for everyone; peers are checked once they have registered.
  std::atomic<uint32_t>& attached = h.attached;
  uint32_t now = attached.fetch_add(1, std::memory_order_seq_cst) + 1;
  futex(&attached, FUTEX_WAKE, INT_MAX, nullptr);
  const auto start = std::chrono::steady_clock::now();
  while (now < static_cast<uint32_t>(world_size)) {
    timespec ts{0, 100 * 1000 * 1000};
    futex(&attached, FUTEX_WAIT, now, &ts);
    now = attached.load(std::memory_order_acquire);
    if (now >= static_cast<uint32_t>(world_size)) break;
    for (int r = 0; r < world_size; ++r) {
      int32_t pid = h.pids[r].load(std::memory_order_acquire);
      if (pid != 0 && process_gone(pid)) {
        h.pids[rank].store(0);
        unmap();
        throw std::runtime_error("shared-memory communicator: rank " + std::to_string(r) + " (process " +
                                 std::to_string(pid) + ") exited before every rank had joined");
      }
    }
    double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (waited > timeout_s) {
      h.pids[rank].store(0);
      unmap();
      throw std::runtime_error("shared-memory communicator: only " + std::to_string(now) + " of " +
                               std::to_string(world_size) + " ranks joined " + path + " within " +
                               std::to_string(static_cast<int>(timeout_s)) + " s");
    }
  }
  // Everyone has the mapping: the name is no longer needed.
  if (rank == 0) ::unlink(path.c_str());
}

ShmComm::~ShmComm() {
  if (!base_) return;
  layout_->header->closed[rank_].store(1, std::memory_order_seq_cst);
  unmap();
}

void ShmComm::unmap() {
  ::munmap(base_, map_bytes_);
  delete layout_;
  base_ = nullptr;
  layout_ = nullptr;
}

int ShmComm::group_size(int id) const { return static_cast<int>(group(id, "group_size").members.size()); }

char* ShmComm::slot(int world_rank) const {
  return base_ + layout_->data_offset + static_cast<size_t>(world_rank) * slot_bytes_;
}

int ShmComm::alloc_group_ids(int count) {
  if (count < 1) throw std::invalid_argument("alloc_group_ids: count must be >= 1");
  uint32_t first = layout_->header->next_group.fetch_add(static_cast<uint32_t>(count)) + 1;
  if (first + static_cast<uint32_t>(count) > static_cast<uint32_t>(kMaxGroups))
    throw std::runtime_error("shared-memory communicator: more than " + std::to_string(kMaxGroups - 1) +
                             " sub-communicators were created");
  return static_cast<int>(first);
}

void ShmComm::define_group(int id, const std::vector<int>& members) {
  if (id < 1 || id >= kMaxGroups) throw std::invalid_argument("define_group: group id " + std::to_string(id) + " is out of range");
  if (members.empty()) throw std::invalid_argument("define_group: a group needs members");
  Group g;
  for (size_t i = 0; i < members.size(); ++i) {
    int r = members[i];
    if (r < 0 || r >= world_) throw std::invalid_argument("define_group: rank " + std::to_string(r) + " is not in the world");
    if (std::count(members.begin(), members.end(), r) != 1)
      throw std::invalid_argument("define_group: rank " + std::to_string(r) + " is listed twice");
    if (r == rank_) g.index = static_cast<int>(i);
  }
  if (g.index < 0) throw std::invalid_argument("define_group: this rank (" + std::to_string(rank_) + ") is not a member");
  g.members = members;
  groups_[id] = std::move(g);
}

const ShmComm::Group& ShmComm::group(int id, const char* op) const {
  if (!base_) throw std::runtime_error(std::string(op) + ": the communicator is closed");
  if (id < 0 || id >= kMaxGroups || groups_[id].index < 0)
    throw std::invalid_argument(std::string(op) + ": unknown group " + std::to_string(id));
  return groups_[id];
}

void ShmComm::wait_word(void* word_p, void* sleepers_p, uint32_t until_not, const int* peers, int npeers,
                        const std::string& what) {
  auto& word = *static_cast<std::atomic<uint32_t>*>(word_p);
  auto& sleepers = *static_cast<std::atomic<uint32_t>*>(sleepers_p);
  for (int i = 0; i < kSpins; ++i) {
    if (word.load(std::memory_order_acquire) != until_not) return;
    ND_CPU_RELAX();
  }
  const auto start = std::chrono::steady_clock::now();
  for (;;) {
    sleepers.fetch_add(1, std::memory_order_seq_cst);
    if (word.load(std::memory_order_seq_cst) == until_not) {
      timespec ts{0, 100 * 1000 * 1000};
      futex(&word, FUTEX_WAIT, until_not, &ts);
    }
    sleepers.fetch_sub(1, std::memory_order_seq_cst);
    if (word.load(std::memory_order_acquire) != until_not) return;
    Header& h = *layout_->header;
    for (int i = 0; i < npeers; ++i) {
      const int r = peers[i];
      if (r == rank_) continue;
      const int32_t pid = h.pids[r].load(std::memory_order_acquire);
      if (process_gone(pid))
        throw std::runtime_error(what + ": rank " + std::to_string(r) + " (process " + std::to_string(pid) + ") has exited");
      if (h.closed[r].load(std::memory_order_acquire))
        throw std::runtime_error(what + ": rank " + std::to_string(r) + " closed its communicator");
    }
    double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (waited > timeout_s_)
      throw std::runtime_error(what + ": timed out after " + std::to_string(static_cast<int>(timeout_s_)) +
                               " s waiting for the other ranks");
  }
}

void ShmComm::arrive(int group_id, const Group& g, const char* what) {
  const uint32_t n = static_cast<uint32_t>(g.members.size());
  if (n == 1) return;
  BarrierWord& b = layout_->barriers[group_id];
  const uint32_t gen = b.generation.load(std::memory_order_acquire);
  if (b.count.fetch_add(1, std::memory_order_acq_rel) + 1 == n) {
    b.count.store(0, std::memory_order_relaxed);
    store_and_wake(b.generation, b.sleepers, gen + 1);
    return;
  }
  wait_word(&b.generation, &b.sleepers, gen, g.members.data(), static_cast<int>(n), what);
}

// Records what this rank is doing (before the first barrier of a collective)...
static void describe(OpDesc& d, uint32_t kind, uint64_t bytes, int32_t extra) {
  d.kind.store(kind, std::memory_order_relaxed);
  d.bytes.store(bytes, std::memory_order_relaxed);
  d.extra.store(extra, std::memory_order_relaxed);
}

// ...and checks after it that every member does the same.
// ...and checks after it that every member does the same. On a mismatch every member finds it
// (some other member differs from each); they pass a second barrier before throwing so that no
// descriptor changes while the others still read it.
void ShmComm::check_op(int group_id, const Group& g, uint32_t kind, uint64_t bytes, int32_t extra, const char* name) {
  std::string mismatch;
  for (size_t i = 0; i < g.members.size() && mismatch.empty(); ++i) {
    const OpDesc& d = layout_->ops[g.members[i]];
    const uint32_t k = d.kind.load(std::memory_order_relaxed);
    const uint64_t b = d.bytes.load(std::memory_order_relaxed);
    const int32_t x = d.extra.load(std::memory_order_relaxed);
    if (k != kind || b != bytes || x != extra)
      mismatch = std::string(name) + " on group " + std::to_string(group_id) + ": rank " + std::to_string(g.members[i]) +
                 " called " + op_text(k, b, x) + ", this rank (" + std::to_string(rank_) + ") " +
                 op_text(kind, bytes, extra);
  }
  if (mismatch.empty()) return;
  arrive(group_id, g, name);
  throw std::runtime_error(mismatch);
}

void ShmComm::barrier(int group_id) {
  const Group& g = group(group_id, "barrier");
  describe(layout_->ops[rank_], kBarrier, 0, 0);
  arrive(group_id, g, "barrier");
  check_op(group_id, g, kBarrier, 0, 0, "barrier");
  arrive(group_id, g, "barrier");
}

void ShmComm::all_gather(int group_id, const void* send, void* recv, size_t bytes) {
  const Group& g = group(group_id, "allGather");
  const size_t n = g.members.size();
  const char* s = static_cast<const char*>(send);
  char* r = static_cast<char*>(recv);
  if (n == 1) {
    if (bytes && r != s) std::memmove(r, s, bytes);
    return;
  }
  size_t off = 0;
  bool first = true;
  do {
    const size_t c = std::min(slot_bytes_, bytes - off);
    if (first) describe(layout_->ops[rank_], kAllGather, bytes, 0);
    run_copies({{slot(rank_), s + off, c}});
    arrive(group_id, g, "allGather");
    if (first) check_op(group_id, g, kAllGather, bytes, 0, "allGather");
    std::vector<CopyJob> jobs;
    for (size_t i = 0; i < n; ++i) jobs.push_back({r + i * bytes + off, slot(g.members[i]), c});
    run_copies(jobs);
    arrive(group_id, g, "allGather");
    off += c;
    first = false;
  } while (off < bytes);
}

// Logical bytes [off, off + c) of block j of n in run-structured memory (byte p of block j at
// ((p / run) * n + j) * run + p % run) paired with contiguous memory: one copy job per run piece.
static void block_pieces(std::vector<CopyJob>& jobs, char* contiguous, char* strided, size_t n, size_t j, size_t run,
                         size_t off, size_t c, bool into_strided) {
  for (size_t p = off; p < off + c;) {
    const size_t o = p / run, in = p % run, len = std::min(run - in, off + c - p);
    char* s = strided + (o * n + j) * run + in;
    char* d = contiguous + (p - off);
    jobs.push_back(into_strided ? CopyJob{s, d, len} : CopyJob{d, s, len});
    p += len;
  }
}

void ShmComm::all_to_all(int group_id, const void* send, void* recv, size_t bytes, size_t send_runs, size_t recv_runs) {
  const Group& g = group(group_id, "allToAll");
  const size_t n = g.members.size();
  const char* s = static_cast<const char*>(send);
  char* r = static_cast<char*>(recv);
  if (n == 1) {
    if (bytes && r != s) std::memmove(r, s, bytes);
    return;
  }
  const size_t chunk = slot_bytes_ / n / 64 * 64;
  if (chunk == 0) throw std::runtime_error("allToAll: the shared-memory slot is too small for " + std::to_string(n) + " ranks");
  if (send_runs == 0 || recv_runs == 0 || bytes % send_runs || bytes % recv_runs)
    throw std::invalid_argument("allToAll: " + std::to_string(bytes) + " bytes per peer do not split into " +
                                std::to_string(send_runs) + " and " + std::to_string(recv_runs) + " runs");
  const size_t send_run = bytes / send_runs, recv_run = bytes / recv_runs;
  const size_t me = static_cast<size_t>(g.index);
  size_t off = 0;
  bool first = true;
  do {
    const size_t c = std::min(chunk, bytes - off);
    if (first) describe(layout_->ops[rank_], kAllToAll, bytes, 0);
    std::vector<CopyJob> out;
    for (size_t j = 0; j < n; ++j) block_pieces(out, slot(rank_) + j * chunk, const_cast<char*>(s), n, j, send_run, off, c, false);
    run_copies(out);
    arrive(group_id, g, "allToAll");
    if (first) check_op(group_id, g, kAllToAll, bytes, 0, "allToAll");
    std::vector<CopyJob> in;
    for (size_t i = 0; i < n; ++i) block_pieces(in, slot(g.members[i]) + me * chunk, r, n, i, recv_run, off, c, true);
    run_copies(in);
    arrive(group_id, g, "allToAll");
    off += c;
    first = false;
  } while (off < bytes);
}

void ShmComm::all_reduce_sum(int group_id, const void* send, void* recv, size_t count, DType dtype) {
  const Group& g = group(group_id, "allReduce");
  const size_t n = g.members.size();
  const size_t es = dtype_size(dtype);
  const size_t bytes = count * es;
  const char* s = static_cast<const char*>(send);
  char* r = static_cast<char*>(recv);
  if (n == 1) {
    if (bytes && r != s) std::memmove(r, s, bytes);
    return;
  }
  const size_t chunk_elems = slot_bytes_ / es;
  size_t off = 0;  // elements
  bool first = true;
  do {
    const size_t c = std::min(chunk_elems, count - off);
    if (first) describe(layout_->ops[rank_], kAllReduce, bytes, static_cast<int32_t>(dtype));
    run_copies({{slot(rank_), s + off * es, c * es}});
    arrive(group_id, g, "allReduce");
    if (first) check_op(group_id, g, kAllReduce, bytes, static_cast<int32_t>(dtype), "allReduce");
    std::vector<const char*> ins;
    for (size_t i = 0; i < n; ++i) ins.push_back(slot(g.members[i]));
    reduce_sum(r + off * es, ins, c, dtype);
    arrive(group_id, g, "allReduce");
    off += c;
    first = false;
  } while (off < count);
}

void ShmComm::broadcast(int group_id, void* data, size_t bytes, int root) {
  const Group& g = group(group_id, "broadcast");
  const size_t n = g.members.size();
  if (root < 0 || static_cast<size_t>(root) >= n)
    throw std::invalid_argument("broadcast: root " + std::to_string(root) + " is not a member index (group of " +
                                std::to_string(n) + ")");
  if (n == 1) return;
  char* d = static_cast<char*>(data);
  const bool is_root = g.index == root;
  const int root_rank = g.members[root];
  size_t off = 0;
  bool first = true;
  do {
    const size_t c = std::min(slot_bytes_, bytes - off);
    if (first) describe(layout_->ops[rank_], kBroadcast, bytes, root);
    if (is_root) run_copies({{slot(rank_), d + off, c}});
    arrive(group_id, g, "broadcast");
    if (first) check_op(group_id, g, kBroadcast, bytes, root, "broadcast");
    if (!is_root) run_copies({{d + off, slot(root_rank), c}});
    arrive(group_id, g, "broadcast");
    off += c;
    first = false;
  } while (off < bytes);
}

// ---- point to point ----

void ShmComm::post_chunk(int dst, const void* src, size_t n, uint64_t total) {
  PairWords& p = layout_->pairs[static_cast<size_t>(rank_) * world_ + dst];
  run_copies({{slot(rank_), static_cast<const char*>(src), n}});
  p.posted.size.store(total, std::memory_order_relaxed);
  store_and_wake(p.posted.value, p.posted.sleepers, p.posted.value.load(std::memory_order_relaxed) + 1);
}

void ShmComm::wait_ack(int dst, const std::string& what) {
  PairWords& p = layout_->pairs[static_cast<size_t>(rank_) * world_ + dst];
  const uint32_t want = p.posted.value.load(std::memory_order_relaxed);
  for (;;) {
    const uint32_t a = p.acked.value.load(std::memory_order_acquire);
    if (a == want) break;
    wait_word(&p.acked.value, &p.acked.sleepers, a, &dst, 1, what);
  }
  if (p.acked.error.exchange(0, std::memory_order_acq_rel) != 0)
    throw std::runtime_error(what + ": rank " + std::to_string(dst) + " expected a message of another size");
}

void ShmComm::take_chunk(int src, void* dst, size_t n, uint64_t expected_total, bool first) {
  PairWords& p = layout_->pairs[static_cast<size_t>(src) * world_ + rank_];
  const uint32_t seen = p.acked.value.load(std::memory_order_relaxed);
  const std::string what = "recv from rank " + std::to_string(src);
  wait_word(&p.posted.value, &p.posted.sleepers, seen, &src, 1, what);
  const uint32_t posted = p.posted.value.load(std::memory_order_acquire);
  if (first) {
    const uint64_t total = p.posted.size.load(std::memory_order_relaxed);
    if (total != expected_total) {
      p.acked.error.store(1, std::memory_order_relaxed);
      store_and_wake(p.acked.value, p.acked.sleepers, posted);
      throw std::runtime_error(what + ": rank " + std::to_string(src) + " sent " + std::to_string(total) +
                               " bytes, this rank expected " + std::to_string(expected_total));
    }
  }
  run_copies({{static_cast<char*>(dst), slot(src), n}});
  store_and_wake(p.acked.value, p.acked.sleepers, posted);
}

static size_t chunks_of(size_t bytes, size_t slot) { return bytes == 0 ? 1 : (bytes + slot - 1) / slot; }

void ShmComm::send(const void* data, size_t bytes, int dst) {
  group(0, "send");
  if (dst < 0 || dst >= world_ || dst == rank_)
    throw std::invalid_argument("send: destination rank " + std::to_string(dst) + " is not another rank of the world");
  const char* d = static_cast<const char*>(data);
  const std::string what = "send to rank " + std::to_string(dst);
  const size_t k = chunks_of(bytes, slot_bytes_);
  for (size_t i = 0; i < k; ++i) {
    const size_t off = i * slot_bytes_;
    post_chunk(dst, d + off, std::min(slot_bytes_, bytes - std::min(bytes, off)), bytes);
    wait_ack(dst, what);
  }
}

void ShmComm::recv(void* data, size_t bytes, int src) {
  group(0, "recv");
  if (src < 0 || src >= world_ || src == rank_)
    throw std::invalid_argument("recv: source rank " + std::to_string(src) + " is not another rank of the world");
  char* d = static_cast<char*>(data);
  const size_t k = chunks_of(bytes, slot_bytes_);
  for (size_t i = 0; i < k; ++i) {
    const size_t off = i * slot_bytes_;
    take_chunk(src, d + off, std::min(slot_bytes_, bytes - std::min(bytes, off)), bytes, i == 0);
  }
}

void ShmComm::send_recv(const void* send, size_t send_bytes, int dst, void* recv, size_t recv_bytes, int src) {
  group(0, "sendRecv");
  for (int r : {dst, src})
    if (r < 0 || r >= world_) throw std::invalid_argument("sendRecv: rank " + std::to_string(r) + " is not in the world");
  if ((dst == rank_) != (src == rank_))
    throw std::invalid_argument("sendRecv: a rank can only exchange with itself in both directions");
  if (dst == rank_) {
    if (send_bytes != recv_bytes)
      throw std::invalid_argument("sendRecv: sending " + std::to_string(send_bytes) + " bytes to itself but receiving " +
                                  std::to_string(recv_bytes));
    if (send_bytes && send != recv) std::memmove(recv, send, send_bytes);
    return;
  }
  const char* s = static_cast<const char*>(send);
  char* r = static_cast<char*>(recv);
  const size_t ks = chunks_of(send_bytes, slot_bytes_), kr = chunks_of(recv_bytes, slot_bytes_);
  const std::string what = "sendRecv to rank " + std::to_string(dst);
  for (size_t i = 0; i < std::max(ks, kr); ++i) {
    const size_t off = i * slot_bytes_;
    if (i < ks) post_chunk(dst, s + off, std::min(slot_bytes_, send_bytes - std::min(send_bytes, off)), send_bytes);
    if (i < kr) take_chunk(src, r + off, std::min(slot_bytes_, recv_bytes - std::min(recv_bytes, off)), recv_bytes, i == 0);
    if (i < ks) wait_ack(dst, what);
  }
}

}  // namespace nd::parallel
