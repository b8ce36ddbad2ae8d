#include "cpu_backend.h"

namespace nd {

Backend& cpu_backend() {
  static CpuBackend backend;
  return backend;
}

}  // namespace nd
