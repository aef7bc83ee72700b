// Autopilot CUDA probe: one self-contained C function per measurement (see probe.h and README.md).
//
// Each function follows the same shape: validate arguments, cudaSetDevice, allocate, warm up,
// time with CUDA events on the legacy default stream, free everything, return the first CUDA
// error as an int. Nothing survives between calls, so a caller may use any thread for any call.
//
// The kernels are extern "C" so that their registered names are plain ("ap_pattern_fill", ...):
// the fake runtime in test/fakes/native/cuda recognises them by those names and emulates them on
// the host. Keep the kernels' parameter lists and AP_FMA_CHAINS in step with that fake.

#include <cuda_runtime.h>

#include <errno.h>
#include <linux/mempolicy.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "probe.h"

namespace {

// Threads per block for every kernel, and blocks per SM: 8 × 256 = 2048 threads, the most an SM
// of compute capability 8.0 or 9.0 holds, so one wave fills the GPU.
constexpr int kThreads = 256;
constexpr int kBlocksPerSm = 8;

// Pattern test allocation: chunks of at most 1 GiB, halved on allocation failure down to 2 MiB.
constexpr size_t kMaxChunk = size_t(1) << 30;
constexpr size_t kMinChunk = size_t(2) << 20;

// FLOPS: the timed launch should last at least kMinMs; the first tries are shorter and calibrate.
constexpr float kMinMs = 50.0f;
constexpr double kTargetMs = 100.0;
constexpr int kStartIterations = 1 << 12;
constexpr int kMaxIterations = 1 << 28;
constexpr int kMaxTries = 8;

// NUMA nodes the mbind mask can name (the kernel's own limit is CONFIG_NODES_SHIFT, at most 1024).
constexpr int kMaxNumaNodes = 1024;
constexpr int kMaskBits = 8 * sizeof(unsigned long);

}  // namespace

// Independent FMA chains per thread in ap_fma32/ap_fma64: enough instruction-level parallelism
// to hide the FMA latency. The fake runtime counts FMAs as threads × iterations × AP_FMA_CHAINS.
#define AP_FMA_CHAINS 8

extern "C" {

// Writes each 64-bit word's own device address XOR mask (mask 0: the address, ~0: its complement).
__global__ void ap_pattern_fill(unsigned long long *words, size_t count, unsigned long long mask) {
  size_t stride = size_t(gridDim.x) * blockDim.x;
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += stride) {
    words[i] = (unsigned long long)(&words[i]) ^ mask;
  }
}

// Counts words that differ from `expected` (address_mode 0) or from address XOR `expected`
// (address_mode 1), adding each thread's count to *mismatches once.
__global__ void ap_pattern_check(const unsigned long long *words, size_t count,
                                 unsigned long long expected, int address_mode,
                                 unsigned long long *mismatches) {
  size_t stride = size_t(gridDim.x) * blockDim.x;
  unsigned long long bad = 0;
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += stride) {
    unsigned long long want =
        address_mode ? ((unsigned long long)(&words[i]) ^ expected) : expected;
    if (words[i] != want) ++bad;
  }
  if (bad != 0) atomicAdd(mismatches, bad);
}

// iterations × AP_FMA_CHAINS fused multiply-adds per thread. b and c come in as parameters and the
// sum is stored only when it equals `sentinel` (never, in practice) so that nothing is folded away.
__global__ void ap_fma32(float *out, int iterations, float b, float c, float sentinel) {
  float a[AP_FMA_CHAINS];
#pragma unroll
  for (int k = 0; k < AP_FMA_CHAINS; ++k) a[k] = float(threadIdx.x + k) * 1e-3f;
#pragma unroll 16
  for (int i = 0; i < iterations; ++i) {
#pragma unroll
    for (int k = 0; k < AP_FMA_CHAINS; ++k) a[k] = fmaf(a[k], b, c);
  }
  float sum = 0.0f;
#pragma unroll
  for (int k = 0; k < AP_FMA_CHAINS; ++k) sum += a[k];
  if (sum == sentinel) out[0] = sum;
}

__global__ void ap_fma64(double *out, int iterations, double b, double c, double sentinel) {
  double a[AP_FMA_CHAINS];
#pragma unroll
  for (int k = 0; k < AP_FMA_CHAINS; ++k) a[k] = double(threadIdx.x + k) * 1e-3;
#pragma unroll 16
  for (int i = 0; i < iterations; ++i) {
#pragma unroll
    for (int k = 0; k < AP_FMA_CHAINS; ++k) a[k] = fma(a[k], b, c);
  }
  double sum = 0.0;
#pragma unroll
  for (int k = 0; k < AP_FMA_CHAINS; ++k) sum += a[k];
  if (sum == sentinel) out[0] = sum;
}

}  // extern "C"

// Records the first error and jumps to the function's cleanup label.
#define AP_TRY(call)                                             \
  do {                                                           \
    cudaError_t ap_e_ = (call);                                  \
    if (ap_e_ != cudaSuccess) {                                  \
      err = ap_e_;                                               \
      goto done;                                                 \
    }                                                            \
  } while (0)

// Runs a cleanup call, keeping an earlier error if there was one.
#define AP_RELEASE(call)                                         \
  do {                                                           \
    cudaError_t ap_e_ = (call);                                  \
    if (err == cudaSuccess && ap_e_ != cudaSuccess) err = ap_e_; \
  } while (0)

namespace {

// Every measurement starts here. koffi reuses its worker threads, and CUDA keeps the last error
// per thread: clear what an earlier call on this thread left, or a later cudaGetLastError check
// would report it as this call's launch failure.
cudaError_t begin(int device) {
  (void)cudaGetLastError();
  return cudaSetDevice(device);
}

// Every measurement ends here, after its frees: destroying the primary context means the exporter
// holds no HBM between measurements, is not listed by NVML as a compute process on the GPU (which
// would make gpumem see the GPU as busy, and may keep jobs out under EXCLUSIVE_PROCESS), and leaves
// no sticky error behind for the next call. The next call pays for a new context. Only when
// cudaSetDevice succeeded: otherwise the thread's current device is some other GPU (device 0 on a
// fresh thread), and resetting it would create and destroy a context there, on a GPU that may run
// someone's job.
cudaError_t end(bool device_set, cudaError_t err) {
  if (!device_set) return err;
  cudaError_t reset = cudaDeviceReset();
  return err != cudaSuccess ? err : reset;
}

cudaError_t grid_for(int device, int *blocks) {
  int sms = 0;
  cudaError_t e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (e != cudaSuccess) return e;
  *blocks = (sms > 0 ? sms : 1) * kBlocksPerSm;
  return cudaSuccess;
}

// Enqueues `copies` copies on the legacy default stream between two events and returns the
// elapsed milliseconds once the second event completes.
cudaError_t timed_copies(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, int copies,
                         float *ms) {
  cudaError_t err = cudaSuccess;
  cudaEvent_t start = nullptr, stop = nullptr;
  AP_TRY(cudaEventCreate(&start));
  AP_TRY(cudaEventCreate(&stop));
  AP_TRY(cudaMemcpyAsync(dst, src, bytes, kind, 0));  // warm-up, not timed
  AP_TRY(cudaEventRecord(start, 0));
  for (int i = 0; i < copies; ++i) AP_TRY(cudaMemcpyAsync(dst, src, bytes, kind, 0));
  AP_TRY(cudaEventRecord(stop, 0));
  AP_TRY(cudaEventSynchronize(stop));
  AP_TRY(cudaEventElapsedTime(ms, start, stop));
  if (!(*ms > 0.0f)) err = cudaErrorUnknown;
done:
  if (stop != nullptr) AP_RELEASE(cudaEventDestroy(stop));
  if (start != nullptr) AP_RELEASE(cudaEventDestroy(start));
  return err;
}

// timed_copies for a peer copy: the warm-up and the timed copies go on the current device's legacy
// default stream (the source's), between two events recorded there.
cudaError_t timed_peer_copies(void *to, int dst, const void *from, int src, size_t bytes,
                              int copies, float *ms) {
  cudaError_t err = cudaSuccess;
  cudaEvent_t start = nullptr, stop = nullptr;
  AP_TRY(cudaEventCreate(&start));
  AP_TRY(cudaEventCreate(&stop));
  AP_TRY(cudaMemcpyPeerAsync(to, dst, from, src, bytes, 0));  // warm-up, not timed
  AP_TRY(cudaEventRecord(start, 0));
  for (int i = 0; i < copies; ++i) AP_TRY(cudaMemcpyPeerAsync(to, dst, from, src, bytes, 0));
  AP_TRY(cudaEventRecord(stop, 0));
  AP_TRY(cudaEventSynchronize(stop));
  AP_TRY(cudaEventElapsedTime(ms, start, stop));
  if (!(*ms > 0.0f)) err = cudaErrorUnknown;
done:
  if (stop != nullptr) AP_RELEASE(cudaEventDestroy(stop));
  if (start != nullptr) AP_RELEASE(cudaEventDestroy(start));
  return err;
}

// A pinned host buffer: either mmap'ed, bound to a NUMA node and registered, or cudaMallocHost'ed.
struct HostBuffer {
  void *p = nullptr;
  size_t bytes = 0;
  bool mapped = false;
};

// mmap + mbind(MPOL_BIND) + touch: the pages are allocated on `node` when touched. 0 or an errno.
int map_on_node(size_t bytes, int node, void **out) {
  if (node >= kMaxNumaNodes) return EINVAL;
  void *p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return errno;
  unsigned long mask[kMaxNumaNodes / kMaskBits] = {};
  mask[node / kMaskBits] = 1UL << (node % kMaskBits);
  // maxnode counts one more than the bits the kernel reads (it decrements it first), as numactl does.
  if (syscall(SYS_mbind, p, bytes, MPOL_BIND, mask, (unsigned long)kMaxNumaNodes + 1, 0) != 0) {
    int e = errno;
    munmap(p, bytes);
    return e;
  }
  memset(p, 0, bytes);  // fault every page in now, under the policy
  *out = p;
  return 0;
}

// The buffer for ap_copy_bandwidth, on `node` when it can be; see probe.h for *placement.
cudaError_t host_alloc(size_t bytes, int node, HostBuffer *b, int *placement, int *why) {
  *placement = AP_PLACEMENT_NOT_ASKED;
  *why = 0;
  b->bytes = bytes;
  if (node >= 0) {
    void *p = nullptr;
    int e = map_on_node(bytes, node, &p);
    if (e != 0) {
      *placement = AP_PLACEMENT_OS_REFUSED;
      *why = e;
    } else {
      cudaError_t r = cudaHostRegister(p, bytes, cudaHostRegisterDefault);
      if (r == cudaSuccess) {
        b->p = p;
        b->mapped = true;
        *placement = AP_PLACEMENT_BOUND;
        return cudaSuccess;
      }
      (void)cudaGetLastError();  // a refused registration is no error of the measurement
      munmap(p, bytes);
      *placement = AP_PLACEMENT_CUDA_REFUSED;
      *why = r;
    }
  }
  return cudaMallocHost(&b->p, bytes);
}

cudaError_t host_free(HostBuffer *b) {
  if (b->p == nullptr) return cudaSuccess;
  if (!b->mapped) return cudaFreeHost(b->p);
  cudaError_t e = cudaHostUnregister(b->p);
  munmap(b->p, b->bytes);
  return e;
}

}  // namespace

extern "C" {

int ap_device_count(int *count) {
  if (count == nullptr) return cudaErrorInvalidValue;
  int n = 0;
  (void)cudaGetLastError();
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e == cudaErrorInsufficientDriver || e == cudaErrorNoDevice) {
    (void)cudaGetLastError();  // clear it so a later call does not see it
    *count = 0;
    return cudaSuccess;
  }
  if (e != cudaSuccess) return e;
  *count = n;
  return cudaSuccess;
}

int ap_pci_bus_id(int device, char *buf, int len) {
  if (buf == nullptr || len < 13) return cudaErrorInvalidValue;
  return cudaDeviceGetPCIBusId(buf, len, device);
}

int ap_device_by_bus_id(const char *bus_id, int *device) {
  if (bus_id == nullptr || device == nullptr) return cudaErrorInvalidValue;
  int found = -1;
  cudaError_t e = cudaDeviceGetByPCIBusId(&found, bus_id);
  if (e != cudaSuccess) {
    // "Not this bus id" is an answer, not an error: leave nothing for a later call on this
    // koffi worker thread to pick up as its own.
    (void)cudaGetLastError();
    return e;
  }
  *device = found;
  return cudaSuccess;
}

int ap_copy_bandwidth(int device, int direction, size_t bytes, int repetitions, int numa_node,
                      double *gbps, int *placement, int *placement_error) {
  if (gbps == nullptr || placement == nullptr || placement_error == nullptr || bytes == 0 ||
      repetitions < 1 || (direction != AP_HOST_TO_DEVICE && direction != AP_DEVICE_TO_HOST)) {
    return cudaErrorInvalidValue;
  }
  cudaError_t err = cudaSuccess;
  bool set = false;
  HostBuffer host;
  void *dev = nullptr;
  float ms = 0.0f;
  int placed = AP_PLACEMENT_NOT_ASKED, why = 0;
  AP_TRY(begin(device));
  set = true;
  AP_TRY(host_alloc(bytes, numa_node, &host, &placed, &why));
  AP_TRY(cudaMalloc(&dev, bytes));
  if (direction == AP_HOST_TO_DEVICE) {
    AP_TRY(timed_copies(dev, host.p, bytes, cudaMemcpyHostToDevice, repetitions, &ms));
  } else {
    AP_TRY(timed_copies(host.p, dev, bytes, cudaMemcpyDeviceToHost, repetitions, &ms));
  }
  *gbps = double(bytes) * repetitions / 1e9 / (ms / 1e3);
  *placement = placed;
  *placement_error = why;
done:
  if (dev != nullptr) AP_RELEASE(cudaFree(dev));
  AP_RELEASE(host_free(&host));
  return end(set, err);
}

int ap_hbm_bandwidth(int device, size_t bytes, int repetitions, double *gbps) {
  if (gbps == nullptr || bytes == 0 || repetitions < 1) return cudaErrorInvalidValue;
  cudaError_t err = cudaSuccess;
  bool set = false;
  void *src = nullptr;
  void *dst = nullptr;
  float ms = 0.0f;
  AP_TRY(begin(device));
  set = true;
  AP_TRY(cudaMalloc(&src, bytes));
  AP_TRY(cudaMalloc(&dst, bytes));
  AP_TRY(cudaMemset(src, 0x5A, bytes));
  AP_TRY(timed_copies(dst, src, bytes, cudaMemcpyDeviceToDevice, repetitions, &ms));
  // Each byte copied is read once and written once.
  *gbps = 2.0 * double(bytes) * repetitions / 1e9 / (ms / 1e3);
done:
  if (dst != nullptr) AP_RELEASE(cudaFree(dst));
  if (src != nullptr) AP_RELEASE(cudaFree(src));
  return end(set, err);
}

int ap_memory_pattern(int device, double fraction, unsigned long long *mismatches,
                      unsigned long long *bytes_tested) {
  if (mismatches == nullptr || bytes_tested == nullptr || !(fraction > 0.0) || fraction > 1.0) {
    return cudaErrorInvalidValue;
  }
  // Constant byte patterns go through cudaMemset; the address patterns through ap_pattern_fill,
  // so that a word written to the wrong place (an address-line fault) reads back wrong.
  struct Pattern {
    int address_mode;
    unsigned char byte;
    unsigned long long value;
  };
  static const Pattern patterns[] = {
      {0, 0x00, 0x0000000000000000ULL}, {0, 0xFF, 0xFFFFFFFFFFFFFFFFULL},
      {0, 0xAA, 0xAAAAAAAAAAAAAAAAULL}, {0, 0x55, 0x5555555555555555ULL},
      {1, 0, 0x0000000000000000ULL},    {1, 0, 0xFFFFFFFFFFFFFFFFULL},
  };

  cudaError_t err = cudaSuccess;
  bool set = false;
  unsigned long long *counter = nullptr;
  void **chunks = nullptr;
  size_t *sizes = nullptr;
  size_t nchunks = 0, capacity = 0, tested = 0, target = 0, chunk = kMaxChunk;
  size_t free_bytes = 0, total_bytes = 0;
  unsigned long long found = 0;
  int blocks = 0;

  AP_TRY(begin(device));
  set = true;
  AP_TRY(grid_for(device, &blocks));
  AP_TRY(cudaMalloc(&counter, sizeof *counter));
  AP_TRY(cudaMemset(counter, 0, sizeof *counter));
  AP_TRY(cudaMemGetInfo(&free_bytes, &total_bytes));
  target = size_t(fraction * double(free_bytes)) & ~size_t(7);
  if (target == 0) AP_TRY(cudaErrorMemoryAllocation);

  // Hold all of it at once, so that the whole fraction is covered rather than one chunk reused.
  while (tested < target) {
    size_t want = target - tested < chunk ? target - tested : chunk;
    void *p = nullptr;
    cudaError_t e = cudaMalloc(&p, want);
    if (e == cudaErrorMemoryAllocation && chunk > kMinChunk) {
      (void)cudaGetLastError();
      chunk /= 2;
      continue;
    }
    if (e == cudaErrorMemoryAllocation && nchunks > 0) {
      (void)cudaGetLastError();  // free memory shrank meanwhile: test what we hold
      break;
    }
    AP_TRY(e);
    if (nchunks == capacity) {
      size_t grown = capacity == 0 ? 64 : capacity * 2;
      void **c = static_cast<void **>(realloc(chunks, grown * sizeof *chunks));
      if (c != nullptr) chunks = c;
      size_t *s = static_cast<size_t *>(realloc(sizes, grown * sizeof *sizes));
      if (s != nullptr) sizes = s;
      if (c == nullptr || s == nullptr) {
        AP_RELEASE(cudaFree(p));
        AP_TRY(cudaErrorMemoryAllocation);
      }
      capacity = grown;
    }
    chunks[nchunks] = p;
    sizes[nchunks] = want;
    ++nchunks;
    tested += want;
  }

  for (const Pattern &pattern : patterns) {
    for (size_t i = 0; i < nchunks; ++i) {
      if (pattern.address_mode) {
        ap_pattern_fill<<<blocks, kThreads>>>(static_cast<unsigned long long *>(chunks[i]),
                                              sizes[i] / 8, pattern.value);
        AP_TRY(cudaGetLastError());
      } else {
        AP_TRY(cudaMemset(chunks[i], pattern.byte, sizes[i]));
      }
    }
    // Check only once every chunk is written, so a write that lands in another chunk shows.
    for (size_t i = 0; i < nchunks; ++i) {
      ap_pattern_check<<<blocks, kThreads>>>(static_cast<unsigned long long *>(chunks[i]),
                                             sizes[i] / 8, pattern.value, pattern.address_mode,
                                             counter);
      AP_TRY(cudaGetLastError());
    }
  }
  AP_TRY(cudaDeviceSynchronize());
  AP_TRY(cudaMemcpy(&found, counter, sizeof found, cudaMemcpyDeviceToHost));
  *mismatches = found;
  *bytes_tested = tested;
done:
  for (size_t i = 0; i < nchunks; ++i) AP_RELEASE(cudaFree(chunks[i]));
  free(chunks);
  free(sizes);
  if (counter != nullptr) AP_RELEASE(cudaFree(counter));
  return end(set, err);
}

int ap_flops(int device, int precision, double *tflops) {
  if (tflops == nullptr || (precision != 32 && precision != 64)) return cudaErrorInvalidValue;
  cudaError_t err = cudaSuccess;
  bool set = false;
  void *out = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr;
  int blocks = 0;
  int iterations = kStartIterations;
  float ms = 0.0f;

  AP_TRY(begin(device));
  set = true;
  AP_TRY(grid_for(device, &blocks));
  AP_TRY(cudaMalloc(&out, sizeof(double)));
  AP_TRY(cudaEventCreate(&start));
  AP_TRY(cudaEventCreate(&stop));

  // The first launch warms up (module load, clocks); later ones grow the iteration count until
  // a launch lasts at least kMinMs, and the last one is the measurement.
  for (int attempt = 0; attempt <= kMaxTries; ++attempt) {
    int n = attempt == 0 ? 16 : iterations;
    AP_TRY(cudaEventRecord(start, 0));
    if (precision == 32) {
      ap_fma32<<<blocks, kThreads>>>(static_cast<float *>(out), n, 0.999999f, 1e-6f, -1.0f);
    } else {
      ap_fma64<<<blocks, kThreads>>>(static_cast<double *>(out), n, 0.999999, 1e-6, -1.0);
    }
    AP_TRY(cudaGetLastError());
    AP_TRY(cudaEventRecord(stop, 0));
    AP_TRY(cudaEventSynchronize(stop));
    AP_TRY(cudaEventElapsedTime(&ms, start, stop));
    if (attempt == 0) continue;
    if (ms >= kMinMs || iterations >= kMaxIterations || attempt == kMaxTries) break;
    double factor = ms > 0.0f ? kTargetMs / ms : 64.0;
    if (factor > 64.0) factor = 64.0;
    if (factor < 2.0) factor = 2.0;
    double next = double(iterations) * factor;
    iterations = next >= kMaxIterations ? kMaxIterations : (int(next) + 15) & ~15;
  }
  if (!(ms > 0.0f)) AP_TRY(cudaErrorUnknown);
  *tflops = 2.0 * double(blocks) * kThreads * double(iterations) * AP_FMA_CHAINS /
            (double(ms) / 1e3) / 1e12;
done:
  if (stop != nullptr) AP_RELEASE(cudaEventDestroy(stop));
  if (start != nullptr) AP_RELEASE(cudaEventDestroy(start));
  if (out != nullptr) AP_RELEASE(cudaFree(out));
  return end(set, err);
}

int ap_can_access_peer(int src, int dst, int *can) {
  if (can == nullptr || src == dst) return cudaErrorInvalidValue;
  int answer = 0;
  (void)cudaGetLastError();
  cudaError_t e = cudaDeviceCanAccessPeer(&answer, src, dst);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();  // this call's answer, not a later call's error
    return e;
  }
  *can = answer;
  return cudaSuccess;
}

int ap_p2p_bandwidth(int src, int dst, size_t bytes, int repetitions, double *gbps) {
  if (gbps == nullptr || bytes == 0 || repetitions < 1 || src == dst) return cudaErrorInvalidValue;
  int can = 0;
  cudaError_t err = static_cast<cudaError_t>(ap_can_access_peer(src, dst, &can));
  if (err != cudaSuccess) return err;
  // Without peer access the runtime would stage the copy through host memory and time that.
  if (!can) return AP_NO_PEER_ACCESS;
  bool src_set = false, dst_set = false;
  void *from = nullptr;
  void *to = nullptr;
  float ms = 0.0f;
  cudaError_t enabled = cudaSuccess;
  AP_TRY(begin(dst));
  dst_set = true;
  AP_TRY(cudaMalloc(&to, bytes));
  AP_TRY(cudaSetDevice(src));
  src_set = true;
  AP_TRY(cudaMalloc(&from, bytes));
  AP_TRY(cudaMemset(from, 0x5A, bytes));
  // Unidirectional, from the current device (src) to dst's allocations. Already enabled (another
  // thread of this process did it) is as good as enabled now.
  enabled = cudaDeviceEnablePeerAccess(dst, 0);
  if (enabled == cudaErrorPeerAccessAlreadyEnabled) {
    (void)cudaGetLastError();
  } else {
    AP_TRY(enabled);
  }
  AP_TRY(timed_peer_copies(to, dst, from, src, bytes, repetitions, &ms));
  *gbps = double(bytes) * repetitions / 1e9 / (ms / 1e3);
done:
  // The source first: resetting it also ends its peer mapping of dst's memory (cudaDeviceReset).
  if (src_set) {
    if (from != nullptr) AP_RELEASE(cudaFree(from));
    err = end(true, err);
  }
  if (dst_set) {
    cudaError_t back = src_set ? cudaSetDevice(dst) : cudaSuccess;
    if (back == cudaSuccess) {
      if (to != nullptr) AP_RELEASE(cudaFree(to));
      err = end(true, err);
    } else if (err == cudaSuccess) {
      err = back;
    }
  }
  return err;
}

const char *ap_error_string(int code) { return cudaGetErrorString(static_cast<cudaError_t>(code)); }

}  // extern "C"
