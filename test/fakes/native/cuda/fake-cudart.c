/*
 * A fake CUDA runtime (libcudart.so.13) for tests on machines without a GPU.
 *
 * It exports the runtime functions the probe library (cuda/probe.cu) calls, plus the hooks that
 * nvcc's generated host code calls (fat-binary and kernel registration, the launch
 * configuration stack, __cudaGetKernel and __cudaLaunchKernel). cuda/Makefile's `fake` target
 * builds it with gcc, soname libcudart.so.13 and the symbol version libcudart.so.13
 * (fake-cudart.map), and links a `--cudart shared` build of probe.cu against it, rpath $ORIGIN,
 * so that build/fakes/cuda/libautopilot-probe.so runs over this file instead of a GPU.
 *
 * Model:
 * - Device memory is host memory (aligned_alloc). Every allocation is tracked, and copies,
 *   memsets and kernels check that their device pointers lie inside a live allocation of the
 *   right kind (cudaErrorInvalidValue for copies and memsets, cudaErrorIllegalAddress for kernels).
 * - Each device has a virtual clock, in seconds. Events record it; cudaEventElapsedTime returns
 *   the difference. Copies really copy the bytes and advance the clock of the calling thread's
 *   current device by bytes / (configured GB/s * 1e9); a device-to-device copy counts bytes read
 *   plus bytes written (2 * bytes), so the configured d2d figure is the read+write figure the
 *   probe reports. So ElapsedTime gives exactly the configured bandwidth.
 * - Kernels are emulated on the host, recognised by the name registered through
 *   __cudaRegisterFunction (the probe's kernels are extern "C", so the names are plain):
 *     ap_pattern_fill   writes each word's address XOR mask, as the kernel does; clock += bytes/d2d
 *     ap_pattern_check  applies pending injected corruption, then really compares and adds the
 *                       number of mismatching words to the device counter; clock += bytes/d2d
 *     ap_fma32/ap_fma64 computes nothing, advances the clock by 2 * FMAs / (configured TFLOPS *
 *                       1e12), FMAs = threads * iterations * FAKE_FMA_CHAINS (probe.cu's
 *                       AP_FMA_CHAINS), so the probe computes exactly the configured TFLOPS
 *   Any other kernel fails with cudaErrorInvalidDeviceFunction.
 * - The current device and the last error are per thread, as in the real runtime.
 * - Peer copies (cudaMemcpyPeerAsync) really copy and advance the calling thread's current
 *   device's clock by bytes / (the ordered pair's GB/s * 1e9) when peer access from the source to
 *   the destination is enabled (cudaDeviceEnablePeerAccess, in the source's context; a reset of
 *   either device ends it), and at the rate of staging through host memory, 1 / (1 / d2h(src) +
 *   1 / h2d(dst)), when it is not, as the real runtime falls back to. cudaDeviceCanAccessPeer
 *   answers 1 for every pair of distinct devices unless told otherwise.
 *
 * Devices: up to FAKE_MAX_DEVICES (32, as the fake NVML). Device i has PCI bus id "0000:XX:00.0",
 * upper-case hex, with the bus numbers the fake NVML (test/fakes/native/nvml/fake-nvml.c) gives
 * its GPU i, so CUDA ordinals and NVML indexes match one to one by bus id: an HGX H100/H200
 * board's eight buses 1B, 43, 52, 61, 9D, C3, D1, DF for devices 0..7, then E1, E2, ... for
 * device 8 on (0xE1 + i - 8). NVML writes the same ids with an 8-digit domain, "00000000:1B:00.0".
 * Each device has FAKE_SMS (132) multiprocessors and compute capability 9.0.
 *
 * Defaults (fakecuda_reset): 8 devices, no error, no hang, per device h2d 54.6 GB/s,
 * d2h 55.1 GB/s (an H200's pinned figures), d2d 4260 GB/s (read + write), FP32 60 TFLOPS,
 * FP64 30 TFLOPS, 256 MiB of device memory, no corruption; every ordered pair of devices has
 * peer access at 390 GB/s. That figure is constructed, not captured: made up to be plausible
 * for an HGX H100/H200 board, whose GPUs have 18 NVLink 4 links, 450 GB/s per direction on paper,
 * of which a unidirectional copy-engine copy reaches somewhat less.
 *
 * Controls (exported; tests call them through koffi, because jest gives each test file its own
 * copy of process.env that C getenv never sees). `device` -1 means every device; functions that
 * return int return 0, or -1 for an argument out of range.
 *   void fakecuda_reset(void)                          defaults above; also clears fakecuda_fail
 *                                                      entries and launch counts
 *   int  fakecuda_set_devices(int n)                   0..32; 0 makes cudaGetDeviceCount say 100
 *   void fakecuda_set_error(int code)                  every runtime call except the frees,
 *                                                      destroys and the error/version queries
 *                                                      returns `code` (35: no driver); 0 clears
 *   int  fakecuda_set_bandwidth(int device, int direction, double gbps)   0 h2d, 1 d2h, 2 d2d
 *   int  fakecuda_set_tflops(int device, int precision, double tflops)    precision 32 or 64
 *   int  fakecuda_set_memory(int device, unsigned long long bytes)        device memory size
 *   int  fakecuda_corrupt(int device, unsigned long long words)
 *        the next pattern checks on the device find `words` corrupted 64-bit words in all, each
 *        corrupted once (bits flipped just before a check reads it), then memory is healthy
 *        again: one ap_memory_pattern call then reports exactly `words` mismatches
 *   void fakecuda_set_hang(int ms)                     every copy and kernel launch first sleeps
 *                                                      `ms` of real time (virtual clock unchanged)
 *   int  fakecuda_fail(const char *function, int code) that runtime function returns `code` on
 *                                                      every call from now on (code 0: stop)
 *   int  fakecuda_live_allocations(void)               device + pinned host allocations not freed
 *   int  fakecuda_live_events(void)                    events not destroyed
 *   unsigned long long fakecuda_launches(const char *kernel)   launches since reset
 *   int  fakecuda_set_unavailable(int device, int on) cudaSetDevice(device) answers 46
 *                                                      (cudaErrorDevicesUnavailable), as for a GPU
 *                                                      in EXCLUSIVE_PROCESS mode that another
 *                                                      process holds (cudaSetDevice's docs)
 *   int  fakecuda_calls_on(const char *function, int device)
 *        the call log: calls since reset of `function` (NULL: any runtime function) that
 *        touched `device`: the ordinal it named (cudaSetDevice, cudaDeviceGetPCIBusId,
 *        cudaDeviceGetAttribute), the ordinal it answered (cudaDeviceGetByPCIBusId: the device
 *        at that bus id, -1 when there is none) or, for calls that work in a context, the
 *        calling thread's current device. cudaGetDeviceCount touches none (-1). The error and
 *        version queries are not logged.
 *   int  fakecuda_contexts(int device)                 primary contexts created on the device since
 *                                                      reset: the first call that needs a context
 *                                                      creates one (cudaSetDevice does, CUDA 12 and
 *                                                      later), cudaDeviceReset destroys it
 *   int  fakecuda_live_contexts(void)                  primary contexts alive now
 *   int  fakecuda_set_peer_bandwidth(int src, int dst, double gbps)   the ordered pair's GB/s
 *   int  fakecuda_set_peer_access(int src, int dst, int can)  what cudaDeviceCanAccessPeer says
 *   int  fakecuda_fail_peer_copy(int src, int dst, int code)  cudaMemcpyPeerAsync from src to dst
 *                                                      returns `code` (0: copies again)
 *   int  fakecuda_peer_enabled(int src, int dst)      1 while src's context has peer access to
 *                                                      dst, 0 when not, -1 out of range
 *   (src and dst -1: every device)
 *
 * Separate processes (an exporter started by an end-to-end test) can be configured with the
 * environment variable FAKE_CUDA_SCENARIO, read once at the first call into this library:
 *   devices=N;error=CODE;hang=MS;h2d=I:GBPS;d2h=I:GBPS;d2d=I:GBPS;corrupt=I:WORDS;
 *   tflops32=I:T;tflops64=I:T;memory=I:BYTES;unavailable=I;
 *   p2pslow=S:D:GBPS;nop2p=S:D;p2pfail=S:D:CODE
 * where I, S and D are device indexes or * for every device; S:D is the ordered pair from S to D
 * (a slow link in both directions is two items). fakecuda_reset returns to the defaults, not
 * to the scenario.
 */
#define _GNU_SOURCE
#include <cuda_runtime_api.h>

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FAKE_MAX_DEVICES 32
#define FAKE_SMS 132
#define FAKE_FMA_CHAINS 8
#define FAKE_MAX_KERNELS 64
#define FAKE_MAX_MODULES 16
#define FAKE_MAX_FAILURES 16
#define FAKE_ALIGN 256
/* The default GB/s of a peer copy: constructed (see the defaults above). */
#define FAKE_P2P_GBPS 390.0

/* Hooks nvcc's host code calls; declared in C++-only toolkit headers, so declared again here. */
void **__cudaRegisterFatBinary(void *fatCubin);
void __cudaRegisterFatBinaryEnd(void **fatCubinHandle);
void __cudaUnregisterFatBinary(void **fatCubinHandle);
void __cudaRegisterFunction(void **fatCubinHandle, const char *hostFun, char *deviceFun,
                            const char *deviceName, int thread_limit, uint3 *tid, uint3 *bid,
                            dim3 *bDim, dim3 *gDim, int *wSize);
unsigned __cudaPushCallConfiguration(dim3 gridDim, dim3 blockDim, size_t sharedMem,
                                     struct CUstream_st *stream);
cudaError_t __cudaPopCallConfiguration(dim3 *gridDim, dim3 *blockDim, size_t *sharedMem,
                                       void *stream);
cudaError_t __cudaGetKernel(cudaKernel_t *kernel, const void *hostFun);
cudaError_t __cudaLaunchKernel(cudaKernel_t kernel, dim3 gridDim, dim3 blockDim, void **args,
                               size_t sharedMem, cudaStream_t stream);
cudaError_t __cudaLaunchKernel_ptsz(cudaKernel_t kernel, dim3 gridDim, dim3 blockDim, void **args,
                                    size_t sharedMem, cudaStream_t stream);

/* The controls. */
void fakecuda_reset(void);
int fakecuda_set_devices(int n);
void fakecuda_set_error(int code);
int fakecuda_set_bandwidth(int device, int direction, double gbps);
int fakecuda_set_tflops(int device, int precision, double tflops);
int fakecuda_set_memory(int device, unsigned long long bytes);
int fakecuda_corrupt(int device, unsigned long long words);
void fakecuda_set_hang(int ms);
int fakecuda_fail(const char *function, int code);
int fakecuda_live_allocations(void);
int fakecuda_resets(int device);
int fakecuda_live_events(void);
unsigned long long fakecuda_launches(const char *kernel);
int fakecuda_set_unavailable(int device, int on);
int fakecuda_calls_on(const char *function, int device);
int fakecuda_contexts(int device);
int fakecuda_live_contexts(void);
int fakecuda_set_peer_bandwidth(int src, int dst, double gbps);
int fakecuda_set_peer_access(int src, int dst, int can);
int fakecuda_fail_peer_copy(int src, int dst, int code);
int fakecuda_peer_enabled(int src, int dst);

/* ---------------------------------------------------------------------------------------------
 * State
 */

enum kernel_kind { K_UNKNOWN, K_FILL, K_CHECK, K_FMA32, K_FMA64 };

struct CUkern_st {
  const void *host_fun;
  void **module;
  enum kernel_kind kind;
  char name[64];
  unsigned long long launches;
};

struct device_config {
  double h2d, d2h, d2d; /* GB/s */
  double tflops32, tflops64;
  unsigned long long memory;
  unsigned long long corrupt_pending;
};

struct failure {
  char function[64];
  int code;
};

struct allocation {
  char *p;
  size_t n;
  int device; /* -1: pinned host memory (cudaMallocHost), -2: registered host memory */
};

#define FAKE_MAX_LOG 8192
struct logged_call {
  const char *function; /* a string literal: __func__ */
  int device;
};

#define EVENT_MAGIC 0x45564e54u
struct CUevent_st {
  unsigned magic;
  int recorded;
  int device;
  double at;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static struct {
  int devices;
  int error;
  int hang_ms;
  struct device_config dev[FAKE_MAX_DEVICES];
  double clock[FAKE_MAX_DEVICES];
  struct failure failures[FAKE_MAX_FAILURES];
  int live_events;
  int unavailable[FAKE_MAX_DEVICES];
  int context_live[FAKE_MAX_DEVICES];
  int contexts_created[FAKE_MAX_DEVICES];
  struct logged_call log[FAKE_MAX_LOG];
  int nlog;
  /* Ordered pairs [src][dst]. */
  double peer_gbps[FAKE_MAX_DEVICES][FAKE_MAX_DEVICES];
  int no_peer[FAKE_MAX_DEVICES][FAKE_MAX_DEVICES];
  int peer_fail[FAKE_MAX_DEVICES][FAKE_MAX_DEVICES];
  int peer_enabled[FAKE_MAX_DEVICES][FAKE_MAX_DEVICES];
} S;

static struct allocation *allocs;
static size_t nallocs, capallocs;

/* Registration runs in the probe's constructors, before any configuration: static storage only. */
static struct CUkern_st kernels[FAKE_MAX_KERNELS];
static void *modules[FAKE_MAX_MODULES];
static int module_used[FAKE_MAX_MODULES];

static __thread int current_device;
static __thread cudaError_t last_error;

struct call_config {
  dim3 grid, block;
  size_t shared;
  cudaStream_t stream;
};
static __thread struct call_config config_stack[8];
static __thread int config_depth;

/* ---------------------------------------------------------------------------------------------
 * Configuration
 */

static void defaults_locked(void) {
  S.devices = 8;
  S.error = 0;
  S.hang_ms = 0;
  for (int i = 0; i < FAKE_MAX_DEVICES; ++i) {
    S.dev[i].h2d = 54.6;
    S.dev[i].d2h = 55.1;
    S.dev[i].d2d = 4260.0;
    S.dev[i].tflops32 = 60.0;
    S.dev[i].tflops64 = 30.0;
    S.dev[i].memory = 256ULL << 20;
    S.dev[i].corrupt_pending = 0;
  }
  memset(S.failures, 0, sizeof S.failures);
  memset(S.unavailable, 0, sizeof S.unavailable);
  memset(S.context_live, 0, sizeof S.context_live);
  memset(S.contexts_created, 0, sizeof S.contexts_created);
  S.nlog = 0;
  for (int i = 0; i < FAKE_MAX_KERNELS; ++i) kernels[i].launches = 0;
  for (int i = 0; i < FAKE_MAX_DEVICES; ++i) {
    for (int j = 0; j < FAKE_MAX_DEVICES; ++j) S.peer_gbps[i][j] = FAKE_P2P_GBPS;
  }
  memset(S.no_peer, 0, sizeof S.no_peer);
  memset(S.peer_fail, 0, sizeof S.peer_fail);
  memset(S.peer_enabled, 0, sizeof S.peer_enabled);
}

/* Calls body for one ordered pair (s, t), or for every src and/or dst given as -1. */
#define FOR_PAIRS(src, dst, body)                                           \
  do {                                                                      \
    int slo_ = (src) < 0 ? 0 : (src), shi_ = (src) < 0 ? FAKE_MAX_DEVICES : (src) + 1; \
    int dlo_ = (dst) < 0 ? 0 : (dst), dhi_ = (dst) < 0 ? FAKE_MAX_DEVICES : (dst) + 1; \
    for (int s = slo_; s < shi_; ++s)                                       \
      for (int t = dlo_; t < dhi_; ++t) body;                               \
  } while (0)

/* Calls fn(dev) for one device, or for all when device is -1. */
#define FOR_DEVICES(device, body)                                           \
  do {                                                                      \
    int lo_ = (device) < 0 ? 0 : (device);                                  \
    int hi_ = (device) < 0 ? FAKE_MAX_DEVICES : (device) + 1;               \
    for (int d = lo_; d < hi_; ++d) body;                                   \
  } while (0)

static int device_arg_ok(int device) { return device >= -1 && device < FAKE_MAX_DEVICES; }

/* One device of a scenario pair: an index or '*' (-1), up to `stop`; the end in *after. */
static int scenario_device(const char *text, char stop, int *device, const char **after) {
  if (text[0] == '*' && text[1] == stop) {
    *device = -1;
    *after = text + 1;
    return 1;
  }
  char *end = NULL;
  long n = strtol(text, &end, 10);
  if (end == text || *end != stop || n < 0 || n >= FAKE_MAX_DEVICES) return 0;
  *device = (int)n;
  *after = end;
  return 1;
}

/* p2pslow=S:D:GBPS, nop2p=S:D, p2pfail=S:D:CODE; 0 when `key` is none of them or `value` is bad. */
static int scenario_pair(const char *key, const char *value) {
  int nop2p = strcmp(key, "nop2p") == 0;
  if (!nop2p && strcmp(key, "p2pslow") != 0 && strcmp(key, "p2pfail") != 0) return 0;
  int src, dst;
  const char *p = value;
  if (!scenario_device(p, ':', &src, &p)) return 0;
  if (!scenario_device(p + 1, nop2p ? '\0' : ':', &dst, &p)) return 0;
  if (nop2p) {
    FOR_PAIRS(src, dst, S.no_peer[s][t] = 1);
    return 1;
  }
  char *end = NULL;
  if (key[3] == 's') {
    double gbps = strtod(p + 1, &end);
    if (end == p + 1 || *end != '\0' || !(gbps > 0)) return 0;
    FOR_PAIRS(src, dst, S.peer_gbps[s][t] = gbps);
  } else {
    long code = strtol(p + 1, &end, 10);
    if (end == p + 1 || *end != '\0') return 0;
    FOR_PAIRS(src, dst, S.peer_fail[s][t] = (int)code);
  }
  return 1;
}

static void scenario_item(const char *key, const char *value) {
  char *end = NULL;
  if (strncmp(key, "p2p", 3) == 0 || strcmp(key, "nop2p") == 0) {
    if (!scenario_pair(key, value)) goto bad;
    return;
  }
  if (strcmp(key, "unavailable") == 0) {
    long n = strtol(value, &end, 10);
    if (end == value || *end != '\0' || n < 0 || n >= FAKE_MAX_DEVICES) goto bad;
    S.unavailable[n] = 1;
    return;
  }
  if (strcmp(key, "devices") == 0 || strcmp(key, "error") == 0 || strcmp(key, "hang") == 0) {
    long n = strtol(value, &end, 10);
    if (end == value || *end != '\0') goto bad;
    if (key[0] == 'd') {
      if (n < 0 || n > FAKE_MAX_DEVICES) goto bad;
      S.devices = (int)n;
    } else if (key[0] == 'e') {
      S.error = (int)n;
    } else {
      S.hang_ms = (int)n;
    }
    return;
  }
  /* I:VALUE */
  const char *colon = strchr(value, ':');
  if (colon == NULL) goto bad;
  int device;
  if (colon - value == 1 && value[0] == '*') {
    device = -1;
  } else {
    long n = strtol(value, &end, 10);
    if (end != colon || n < 0 || n >= FAKE_MAX_DEVICES) goto bad;
    device = (int)n;
  }
  const char *number = colon + 1;
  if (strcmp(key, "corrupt") == 0 || strcmp(key, "memory") == 0) {
    unsigned long long n = strtoull(number, &end, 10);
    if (end == number || *end != '\0') goto bad;
    if (key[0] == 'c') {
      FOR_DEVICES(device, S.dev[d].corrupt_pending = n);
    } else {
      FOR_DEVICES(device, S.dev[d].memory = n);
    }
    return;
  }
  double x = strtod(number, &end);
  if (end == number || *end != '\0' || !(x > 0)) goto bad;
  if (strcmp(key, "h2d") == 0) {
    FOR_DEVICES(device, S.dev[d].h2d = x);
  } else if (strcmp(key, "d2h") == 0) {
    FOR_DEVICES(device, S.dev[d].d2h = x);
  } else if (strcmp(key, "d2d") == 0) {
    FOR_DEVICES(device, S.dev[d].d2d = x);
  } else if (strcmp(key, "tflops32") == 0) {
    FOR_DEVICES(device, S.dev[d].tflops32 = x);
  } else if (strcmp(key, "tflops64") == 0) {
    FOR_DEVICES(device, S.dev[d].tflops64 = x);
  } else {
    goto bad;
  }
  return;
bad:
  fprintf(stderr, "fake-cudart: FAKE_CUDA_SCENARIO: ignoring %s=%s\n", key, value);
}

static void apply_scenario(const char *text) {
  char *copy = strdup(text);
  if (copy == NULL) return;
  char *save = NULL;
  for (char *item = strtok_r(copy, ";", &save); item != NULL; item = strtok_r(NULL, ";", &save)) {
    while (*item == ' ') ++item;
    if (*item == '\0') continue;
    char *eq = strchr(item, '=');
    if (eq == NULL) {
      fprintf(stderr, "fake-cudart: FAKE_CUDA_SCENARIO: ignoring %s\n", item);
      continue;
    }
    *eq = '\0';
    scenario_item(item, eq + 1);
  }
  free(copy);
}

static void init_once(void) {
  pthread_mutex_lock(&lock);
  defaults_locked();
  const char *scenario = getenv("FAKE_CUDA_SCENARIO");
  if (scenario != NULL) apply_scenario(scenario);
  pthread_mutex_unlock(&lock);
}

static void ensure(void) { pthread_once(&once, init_once); }

/* Counts resets per device, so tests can see that every measurement releases its context. */
static int device_resets[64];

void fakecuda_reset(void) {
  memset(device_resets, 0, sizeof device_resets);
  ensure();
  pthread_mutex_lock(&lock);
  defaults_locked();
  pthread_mutex_unlock(&lock);
}

int fakecuda_set_devices(int n) {
  ensure();
  if (n < 0 || n > FAKE_MAX_DEVICES) return -1;
  pthread_mutex_lock(&lock);
  S.devices = n;
  pthread_mutex_unlock(&lock);
  return 0;
}

void fakecuda_set_error(int code) {
  ensure();
  pthread_mutex_lock(&lock);
  S.error = code;
  pthread_mutex_unlock(&lock);
}

int fakecuda_set_bandwidth(int device, int direction, double gbps) {
  ensure();
  if (!device_arg_ok(device) || direction < 0 || direction > 2 || !(gbps > 0)) return -1;
  pthread_mutex_lock(&lock);
  if (direction == 0) FOR_DEVICES(device, S.dev[d].h2d = gbps);
  if (direction == 1) FOR_DEVICES(device, S.dev[d].d2h = gbps);
  if (direction == 2) FOR_DEVICES(device, S.dev[d].d2d = gbps);
  pthread_mutex_unlock(&lock);
  return 0;
}

int fakecuda_set_tflops(int device, int precision, double tflops) {
  ensure();
  if (!device_arg_ok(device) || (precision != 32 && precision != 64) || !(tflops > 0)) return -1;
  pthread_mutex_lock(&lock);
  if (precision == 32) FOR_DEVICES(device, S.dev[d].tflops32 = tflops);
  if (precision == 64) FOR_DEVICES(device, S.dev[d].tflops64 = tflops);
  pthread_mutex_unlock(&lock);
  return 0;
}

int fakecuda_set_memory(int device, unsigned long long bytes) {
  ensure();
  if (!device_arg_ok(device)) return -1;
  pthread_mutex_lock(&lock);
  FOR_DEVICES(device, S.dev[d].memory = bytes);
  pthread_mutex_unlock(&lock);
  return 0;
}

int fakecuda_corrupt(int device, unsigned long long words) {
  ensure();
  if (!device_arg_ok(device)) return -1;
  pthread_mutex_lock(&lock);
  FOR_DEVICES(device, S.dev[d].corrupt_pending += words);
  pthread_mutex_unlock(&lock);
  return 0;
}

void fakecuda_set_hang(int ms) {
  ensure();
  pthread_mutex_lock(&lock);
  S.hang_ms = ms < 0 ? 0 : ms;
  pthread_mutex_unlock(&lock);
}

int fakecuda_fail(const char *function, int code) {
  ensure();
  if (function == NULL || strlen(function) >= sizeof S.failures[0].function) return -1;
  int result = -1;
  pthread_mutex_lock(&lock);
  for (int i = 0; i < FAKE_MAX_FAILURES; ++i) {
    if (strcmp(S.failures[i].function, function) == 0) {
      S.failures[i].code = code;
      if (code == 0) S.failures[i].function[0] = '\0';
      result = 0;
      break;
    }
  }
  if (result != 0 && code == 0) result = 0;
  for (int i = 0; result != 0 && i < FAKE_MAX_FAILURES; ++i) {
    if (S.failures[i].function[0] == '\0') {
      strcpy(S.failures[i].function, function);
      S.failures[i].code = code;
      result = 0;
    }
  }
  pthread_mutex_unlock(&lock);
  return result;
}

int fakecuda_live_allocations(void) {
  ensure();
  pthread_mutex_lock(&lock);
  int n = (int)nallocs;
  pthread_mutex_unlock(&lock);
  return n;
}

int fakecuda_live_events(void) {
  ensure();
  pthread_mutex_lock(&lock);
  int n = S.live_events;
  pthread_mutex_unlock(&lock);
  return n;
}

unsigned long long fakecuda_launches(const char *kernel) {
  ensure();
  unsigned long long n = 0;
  pthread_mutex_lock(&lock);
  for (int i = 0; i < FAKE_MAX_KERNELS; ++i) {
    if (kernels[i].host_fun != NULL && strcmp(kernels[i].name, kernel) == 0) {
      n += kernels[i].launches;
    }
  }
  pthread_mutex_unlock(&lock);
  return n;
}

int fakecuda_set_unavailable(int device, int on) {
  ensure();
  if (device < 0 || device >= FAKE_MAX_DEVICES) return -1;
  pthread_mutex_lock(&lock);
  S.unavailable[device] = on != 0;
  pthread_mutex_unlock(&lock);
  return 0;
}

int fakecuda_calls_on(const char *function, int device) {
  ensure();
  int n = 0;
  pthread_mutex_lock(&lock);
  for (int i = 0; i < S.nlog; ++i) {
    if (S.log[i].device != device) continue;
    if (function == NULL || strcmp(S.log[i].function, function) == 0) ++n;
  }
  pthread_mutex_unlock(&lock);
  return n;
}

int fakecuda_contexts(int device) {
  ensure();
  if (device < 0 || device >= FAKE_MAX_DEVICES) return -1;
  pthread_mutex_lock(&lock);
  int n = S.contexts_created[device];
  pthread_mutex_unlock(&lock);
  return n;
}

int fakecuda_live_contexts(void) {
  ensure();
  int n = 0;
  pthread_mutex_lock(&lock);
  for (int i = 0; i < FAKE_MAX_DEVICES; ++i) n += S.context_live[i];
  pthread_mutex_unlock(&lock);
  return n;
}

static int pair_arg_ok(int src, int dst) { return device_arg_ok(src) && device_arg_ok(dst); }

int fakecuda_set_peer_bandwidth(int src, int dst, double gbps) {
  ensure();
  if (!pair_arg_ok(src, dst) || !(gbps > 0)) return -1;
  pthread_mutex_lock(&lock);
  FOR_PAIRS(src, dst, S.peer_gbps[s][t] = gbps);
  pthread_mutex_unlock(&lock);
  return 0;
}

int fakecuda_set_peer_access(int src, int dst, int can) {
  ensure();
  if (!pair_arg_ok(src, dst)) return -1;
  pthread_mutex_lock(&lock);
  FOR_PAIRS(src, dst, S.no_peer[s][t] = can == 0);
  pthread_mutex_unlock(&lock);
  return 0;
}

int fakecuda_fail_peer_copy(int src, int dst, int code) {
  ensure();
  if (!pair_arg_ok(src, dst)) return -1;
  pthread_mutex_lock(&lock);
  FOR_PAIRS(src, dst, S.peer_fail[s][t] = code);
  pthread_mutex_unlock(&lock);
  return 0;
}

int fakecuda_peer_enabled(int src, int dst) {
  ensure();
  if (src < 0 || dst < 0 || src >= FAKE_MAX_DEVICES || dst >= FAKE_MAX_DEVICES) return -1;
  pthread_mutex_lock(&lock);
  int on = S.peer_enabled[src][dst];
  pthread_mutex_unlock(&lock);
  return on;
}

/* ---------------------------------------------------------------------------------------------
 * Helpers
 */

/* Appends to the call log; past FAKE_MAX_LOG entries the log keeps its first ones. */
static void log_call(const char *function, int device) {
  pthread_mutex_lock(&lock);
  if (S.nlog < FAKE_MAX_LOG) S.log[S.nlog++] = (struct logged_call){function, device};
  pthread_mutex_unlock(&lock);
}

/* A call that works in the current device's primary context: logs it and creates the context
 * when there is none (the runtime initialises it at the first call that needs it). */
static void open_context(int device) {
  pthread_mutex_lock(&lock);
  if (device >= 0 && device < FAKE_MAX_DEVICES && device < S.devices && !S.context_live[device]) {
    S.context_live[device] = 1;
    ++S.contexts_created[device];
  }
  pthread_mutex_unlock(&lock);
}

static void in_context(const char *function) {
  log_call(function, current_device);
  open_context(current_device);
}

static cudaError_t fail(cudaError_t code) {
  last_error = code;
  return code;
}

/* The injected error for a runtime function: a fakecuda_fail entry, else (when `global`) the
 * fakecuda_set_error code. */
static int injected(const char *function, int global) {
  int code = 0;
  pthread_mutex_lock(&lock);
  for (int i = 0; i < FAKE_MAX_FAILURES; ++i) {
    if (S.failures[i].function[0] != '\0' && strcmp(S.failures[i].function, function) == 0) {
      code = S.failures[i].code;
    }
  }
  if (code == 0 && global) code = S.error;
  pthread_mutex_unlock(&lock);
  return code;
}

#define ENTER(global)                                          \
  do {                                                         \
    ensure();                                                  \
    in_context(__func__);                                      \
    int injected_ = injected(__func__, (global));              \
    if (injected_ != 0) return fail((cudaError_t)injected_);   \
  } while (0)

/* For the calls that name a device ordinal and need no context. */
#define ENTER_QUERY(global, device)                            \
  do {                                                         \
    ensure();                                                  \
    log_call(__func__, (device));                              \
    int injected_ = injected(__func__, (global));              \
    if (injected_ != 0) return fail((cudaError_t)injected_);   \
  } while (0)

/* cudaSuccess, or why `device` is not a usable ordinal. Caller holds the lock. */
static cudaError_t check_device_locked(int device) {
  if (S.devices == 0) return cudaErrorNoDevice;
  if (device < 0 || device >= S.devices) return cudaErrorInvalidDevice;
  return cudaSuccess;
}

static cudaError_t check_device(int device) {
  pthread_mutex_lock(&lock);
  cudaError_t e = check_device_locked(device);
  pthread_mutex_unlock(&lock);
  return e;
}

/* The allocation holding [p, p + n) (n 0 counts as 1), or NULL. Caller holds the lock. */
static struct allocation *find_locked(const void *p, size_t n) {
  const char *c = (const char *)p;
  if (n == 0) n = 1;
  for (size_t i = 0; i < nallocs; ++i) {
    struct allocation *a = &allocs[i];
    if (c >= a->p && c < a->p + a->n && n <= (size_t)(a->p + a->n - c)) return a;
  }
  return NULL;
}

/* True when [p, p + n) lies in device memory (any device). */
static int is_device_range(const void *p, size_t n) {
  pthread_mutex_lock(&lock);
  struct allocation *a = find_locked(p, n);
  int ok = a != NULL && a->device >= 0;
  pthread_mutex_unlock(&lock);
  return ok;
}

/* True when p points into any device allocation (the host side of a copy must not). */
static int touches_device(const void *p) {
  pthread_mutex_lock(&lock);
  struct allocation *a = find_locked(p, 0);
  int dev = a != NULL && a->device >= 0;
  pthread_mutex_unlock(&lock);
  return dev;
}

static unsigned long long allocated_on_locked(int device) {
  unsigned long long sum = 0;
  for (size_t i = 0; i < nallocs; ++i) {
    if (allocs[i].device == device) sum += allocs[i].n;
  }
  return sum;
}

static cudaError_t track(void *p, size_t n, int device) {
  pthread_mutex_lock(&lock);
  if (nallocs == capallocs) {
    size_t cap = capallocs == 0 ? 64 : capallocs * 2;
    struct allocation *grown = realloc(allocs, cap * sizeof *allocs);
    if (grown == NULL) {
      pthread_mutex_unlock(&lock);
      return cudaErrorMemoryAllocation;
    }
    allocs = grown;
    capallocs = cap;
  }
  allocs[nallocs++] = (struct allocation){(char *)p, n, device};
  pthread_mutex_unlock(&lock);
  return cudaSuccess;
}

/* Removes the allocation that starts at p if it is of the wanted kind (host or device). */
static int untrack(void *p, int host) {
  int found = 0;
  pthread_mutex_lock(&lock);
  for (size_t i = 0; i < nallocs; ++i) {
    if (allocs[i].p == p && (host ? allocs[i].device == -1 : allocs[i].device >= 0)) {
      allocs[i] = allocs[--nallocs];
      found = 1;
      break;
    }
  }
  pthread_mutex_unlock(&lock);
  return found;
}

static void advance(int device, double seconds) {
  pthread_mutex_lock(&lock);
  if (device >= 0 && device < FAKE_MAX_DEVICES) S.clock[device] += seconds;
  pthread_mutex_unlock(&lock);
}

static void hang(void) {
  pthread_mutex_lock(&lock);
  int ms = S.hang_ms;
  pthread_mutex_unlock(&lock);
  if (ms <= 0) return;
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

static struct device_config config_of(int device) {
  pthread_mutex_lock(&lock);
  struct device_config c = S.dev[device];
  pthread_mutex_unlock(&lock);
  return c;
}

/* ---------------------------------------------------------------------------------------------
 * Devices, errors, versions
 */

/* The fake NVML's bus numbers (see the top of this file). */
static const unsigned hgx_bus[8] = {0x1B, 0x43, 0x52, 0x61, 0x9D, 0xC3, 0xD1, 0xDF};

static unsigned bus_of(int device) {
  return device < 8 ? hgx_bus[device] : 0xE1u + (unsigned)(device - 8);
}

cudaError_t cudaGetDeviceCount(int *count) {
  ensure();
  log_call(__func__, -1);
  if (count == NULL) return fail(cudaErrorInvalidValue);
  int code = injected(__func__, 1);
  if (code != 0) {
    *count = 0;
    return fail((cudaError_t)code);
  }
  pthread_mutex_lock(&lock);
  int n = S.devices;
  pthread_mutex_unlock(&lock);
  *count = n;
  return n == 0 ? fail(cudaErrorNoDevice) : cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  ENTER_QUERY(1, device);
  cudaError_t e = check_device(device);
  if (e != cudaSuccess) return fail(e);
  pthread_mutex_lock(&lock);
  int unavailable = S.unavailable[device];
  pthread_mutex_unlock(&lock);
  if (unavailable) return fail(cudaErrorDevicesUnavailable);
  current_device = device;
  open_context(device); /* CUDA 12 and later: cudaSetDevice initialises the primary context */
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int *device) {
  ENTER_QUERY(1, current_device);
  if (device == NULL) return fail(cudaErrorInvalidValue);
  *device = current_device;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetPCIBusId(char *pciBusId, int len, int device) {
  ENTER_QUERY(1, device);
  cudaError_t e = check_device(device);
  if (e != cudaSuccess) return fail(e);
  if (pciBusId == NULL || len < 13) return fail(cudaErrorInvalidValue);
  snprintf(pciBusId, (size_t)len, "%04X:%02X:%02X.%X", 0u, bus_of(device), 0u, 0u);
  return cudaSuccess;
}

/* One hex field of a bus id, at least one digit, the whole field: *end_out past it. */
static int hex_field(const char *text, unsigned long *value, const char **end_out) {
  char *end = NULL;
  if (!((*text >= '0' && *text <= '9') || (*text >= 'a' && *text <= 'f') ||
        (*text >= 'A' && *text <= 'F'))) {
    return 0;
  }
  *value = strtoul(text, &end, 16);
  *end_out = end;
  return 1;
}

/* The forms cudaDeviceGetByPCIBusId's documentation lists: "[domain]:[bus]:[device].[function]",
 * "[domain]:[bus]:[device]" and "[bus]:[device].[function]", all hex. 0 when malformed. */
static int parse_bus_id(const char *text, unsigned long field[4]) {
  unsigned long v[4];
  int n = 0;
  const char *p = text;
  char seps[4] = {0};
  while (n < 4 && hex_field(p, &v[n], &p)) {
    seps[n] = *p;
    ++n;
    if (*p == '\0') break;
    if (*p != ':' && *p != '.') return 0;
    ++p;
  }
  if (*p != '\0' || n < 3) return 0;
  if (n == 4 && seps[0] == ':' && seps[1] == ':' && seps[2] == '.') {
    memcpy(field, v, sizeof v);
  } else if (n == 3 && seps[0] == ':' && seps[1] == ':') {
    field[0] = v[0], field[1] = v[1], field[2] = v[2], field[3] = 0;
  } else if (n == 3 && seps[0] == ':' && seps[1] == '.') {
    field[0] = 0, field[1] = v[0], field[2] = v[1], field[3] = v[2];
  } else {
    return 0;
  }
  return 1;
}

/* The device at a bus id, -1 when none; -2 when the text is no bus id. */
static int device_at_bus_id(const char *text) {
  unsigned long f[4];
  if (text == NULL || !parse_bus_id(text, f)) return -2;
  if (f[0] != 0 || f[2] != 0 || f[3] != 0) return -1;
  pthread_mutex_lock(&lock);
  int n = S.devices;
  pthread_mutex_unlock(&lock);
  for (int d = 0; d < n; ++d) {
    if (bus_of(d) == f[1]) return d;
  }
  return -1;
}

/* A bus id no device has: cudaErrorInvalidDevice, one of the two failures the runtime API
 * documents for this function (the other, cudaErrorInvalidValue, for a NULL or malformed
 * argument); which one the real runtime gives for an unknown id is not documented, and the
 * exporter treats both alike. Logged with the ordinal it answers, so a test sees which GPUs were
 * looked up. */
cudaError_t cudaDeviceGetByPCIBusId(int *device, const char *pciBusId) {
  ensure();
  int found = device_at_bus_id(pciBusId);
  ENTER_QUERY(1, found < 0 ? -1 : found);
  if (device == NULL || found == -2) return fail(cudaErrorInvalidValue);
  pthread_mutex_lock(&lock);
  int none = S.devices == 0;
  pthread_mutex_unlock(&lock);
  if (none) return fail(cudaErrorNoDevice);
  if (found < 0) return fail(cudaErrorInvalidDevice);
  *device = found;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int *value, enum cudaDeviceAttr attr, int device) {
  ENTER_QUERY(1, device);
  cudaError_t e = check_device(device);
  if (e != cudaSuccess) return fail(e);
  if (value == NULL) return fail(cudaErrorInvalidValue);
  switch (attr) {
    case cudaDevAttrMultiProcessorCount:
      *value = FAKE_SMS;
      return cudaSuccess;
    case cudaDevAttrComputeCapabilityMajor:
      *value = 9;
      return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor:
      *value = 0;
      return cudaSuccess;
    case cudaDevAttrMaxThreadsPerBlock:
      *value = 1024;
      return cudaSuccess;
    default:
      return fail(cudaErrorInvalidValue);
  }
}

int fakecuda_resets(int device) {
  return device >= 0 && device < 64 ? device_resets[device] : -1;
}

cudaError_t cudaDeviceReset(void) {
  ENTER_QUERY(1, current_device);
  pthread_mutex_lock(&lock);
  if (current_device >= 0 && current_device < FAKE_MAX_DEVICES) {
    S.context_live[current_device] = 0;
    /* Peer access ends when either device is reset (cudaDeviceEnablePeerAccess's docs). */
    for (int d = 0; d < FAKE_MAX_DEVICES; ++d) {
      S.peer_enabled[current_device][d] = 0;
      S.peer_enabled[d][current_device] = 0;
    }
  }
  pthread_mutex_unlock(&lock);
  if (current_device >= 0 && current_device < 64) device_resets[current_device]++;
  last_error = cudaSuccess;
  return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void) {
  ENTER(1);
  cudaError_t e = check_device(current_device);
  return e == cudaSuccess ? cudaSuccess : fail(e);
}

cudaError_t cudaGetLastError(void) {
  ensure();
  cudaError_t e = last_error;
  last_error = cudaSuccess;
  return e;
}

cudaError_t cudaPeekAtLastError(void) {
  ensure();
  return last_error;
}

const char *cudaGetErrorName(cudaError_t error) {
  switch ((int)error) {
    case 0: return "cudaSuccess";
    case 1: return "cudaErrorInvalidValue";
    case 2: return "cudaErrorMemoryAllocation";
    case 3: return "cudaErrorInitializationError";
    case 9: return "cudaErrorInvalidConfiguration";
    case 21: return "cudaErrorInvalidMemcpyDirection";
    case 35: return "cudaErrorInsufficientDriver";
    case 46: return "cudaErrorDevicesUnavailable";
    case 98: return "cudaErrorInvalidDeviceFunction";
    case 100: return "cudaErrorNoDevice";
    case 101: return "cudaErrorInvalidDevice";
    case 214: return "cudaErrorECCUncorrectable";
    case 400: return "cudaErrorInvalidResourceHandle";
    case 600: return "cudaErrorNotReady";
    case 217: return "cudaErrorPeerAccessUnsupported";
    case 700: return "cudaErrorIllegalAddress";
    case 704: return "cudaErrorPeerAccessAlreadyEnabled";
    case 705: return "cudaErrorPeerAccessNotEnabled";
    case 712: return "cudaErrorHostMemoryAlreadyRegistered";
    case 713: return "cudaErrorHostMemoryNotRegistered";
    case 719: return "cudaErrorLaunchFailure";
    case 800: return "cudaErrorNotPermitted";
    case 999: return "cudaErrorUnknown";
    default: return "cudaErrorUnknown";
  }
}

const char *cudaGetErrorString(cudaError_t error) {
  switch ((int)error) {
    case 0: return "no error";
    case 1: return "invalid argument";
    case 2: return "out of memory";
    case 3: return "initialization error";
    case 9: return "invalid configuration argument";
    case 21: return "invalid copy direction for memcpy";
    case 35: return "CUDA driver version is insufficient for CUDA runtime version";
    case 46: return "CUDA-capable device(s) is/are busy or unavailable";
    case 98: return "invalid device function";
    case 100: return "no CUDA-capable device is detected";
    case 101: return "invalid device ordinal";
    case 214: return "uncorrectable ECC error encountered";
    case 400: return "invalid resource handle";
    case 600: return "device not ready";
    case 217: return "peer access is not supported between these two devices";
    case 700: return "an illegal memory access was encountered";
    case 704: return "peer access is already enabled";
    case 705: return "peer access has not been enabled";
    case 712: return "part or all of the requested memory range is already mapped";
    case 713: return "pointer does not correspond to a registered memory region";
    case 719: return "unspecified launch failure";
    case 800: return "operation not permitted";
    case 999: return "unknown error";
    default: return "unrecognized error code";
  }
}

cudaError_t cudaRuntimeGetVersion(int *runtimeVersion) {
  if (runtimeVersion == NULL) return fail(cudaErrorInvalidValue);
  *runtimeVersion = 13000;
  return cudaSuccess;
}

cudaError_t cudaDriverGetVersion(int *driverVersion) {
  ensure();
  if (driverVersion == NULL) return fail(cudaErrorInvalidValue);
  pthread_mutex_lock(&lock);
  int no_driver = S.error == cudaErrorInsufficientDriver;
  pthread_mutex_unlock(&lock);
  *driverVersion = no_driver ? 0 : 13000; /* the real runtime says 0 when there is no driver */
  return cudaSuccess;
}

/* ---------------------------------------------------------------------------------------------
 * Memory
 */

cudaError_t cudaMalloc(void **devPtr, size_t size) {
  ENTER(1);
  if (devPtr == NULL) return fail(cudaErrorInvalidValue);
  int device = current_device;
  pthread_mutex_lock(&lock);
  cudaError_t e = check_device_locked(device);
  int room = e == cudaSuccess && allocated_on_locked(device) + size <= S.dev[device].memory;
  pthread_mutex_unlock(&lock);
  if (e != cudaSuccess) return fail(e);
  if (size == 0) {
    *devPtr = NULL;
    return cudaSuccess;
  }
  if (!room) return fail(cudaErrorMemoryAllocation);
  size_t rounded = (size + FAKE_ALIGN - 1) / FAKE_ALIGN * FAKE_ALIGN;
  void *p = aligned_alloc(FAKE_ALIGN, rounded);
  if (p == NULL) return fail(cudaErrorMemoryAllocation);
  e = track(p, size, device);
  if (e != cudaSuccess) {
    free(p);
    return fail(e);
  }
  *devPtr = p;
  return cudaSuccess;
}

cudaError_t cudaFree(void *devPtr) {
  ENTER(0);
  if (devPtr == NULL) return cudaSuccess;
  if (!untrack(devPtr, 0)) return fail(cudaErrorInvalidValue);
  free(devPtr);
  return cudaSuccess;
}

cudaError_t cudaMallocHost(void **ptr, size_t size) {
  ENTER(1);
  if (ptr == NULL) return fail(cudaErrorInvalidValue);
  cudaError_t e = check_device(current_device);
  if (e != cudaSuccess) return fail(e);
  void *p = malloc(size == 0 ? 1 : size);
  if (p == NULL) return fail(cudaErrorMemoryAllocation);
  e = track(p, size, -1);
  if (e != cudaSuccess) {
    free(p);
    return fail(e);
  }
  *ptr = p;
  return cudaSuccess;
}

cudaError_t cudaFreeHost(void *ptr) {
  ENTER(0);
  if (ptr == NULL) return cudaSuccess;
  if (!untrack(ptr, 1)) return fail(cudaErrorInvalidValue);
  free(ptr);
  return cudaSuccess;
}

/* Page-locks nothing: the range is only tracked, so copies and leaks see it as pinned memory. */
cudaError_t cudaHostRegister(void *ptr, size_t size, unsigned int flags) {
  ENTER(1);
  if (ptr == NULL || size == 0 || flags > 0x1f) return fail(cudaErrorInvalidValue);
  cudaError_t e = check_device(current_device);
  if (e != cudaSuccess) return fail(e);
  pthread_mutex_lock(&lock);
  int overlaps = find_locked(ptr, size) != NULL || find_locked((char *)ptr + size - 1, 1) != NULL;
  pthread_mutex_unlock(&lock);
  if (overlaps) return fail(cudaErrorHostMemoryAlreadyRegistered);
  e = track(ptr, size, -2);
  return e == cudaSuccess ? cudaSuccess : fail(e);
}

cudaError_t cudaHostUnregister(void *ptr) {
  ENTER(0);
  if (ptr == NULL) return fail(cudaErrorInvalidValue);
  int found = 0;
  pthread_mutex_lock(&lock);
  for (size_t i = 0; i < nallocs; ++i) {
    if (allocs[i].p == ptr && allocs[i].device == -2) {
      allocs[i] = allocs[--nallocs];
      found = 1;
      break;
    }
  }
  pthread_mutex_unlock(&lock);
  return found ? cudaSuccess : fail(cudaErrorHostMemoryNotRegistered);
}

cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes) {
  ENTER(1);
  if (free_bytes == NULL || total_bytes == NULL) return fail(cudaErrorInvalidValue);
  int device = current_device;
  pthread_mutex_lock(&lock);
  cudaError_t e = check_device_locked(device);
  if (e == cudaSuccess) {
    unsigned long long used = allocated_on_locked(device);
    unsigned long long total = S.dev[device].memory;
    *total_bytes = (size_t)total;
    *free_bytes = (size_t)(used >= total ? 0 : total - used);
  }
  pthread_mutex_unlock(&lock);
  return e == cudaSuccess ? cudaSuccess : fail(e);
}

static cudaError_t copy(void *dst, const void *src, size_t count, enum cudaMemcpyKind kind) {
  int device = current_device;
  cudaError_t e = check_device(device);
  if (e != cudaSuccess) return fail(e);
  if (kind == cudaMemcpyDefault) {
    int d = touches_device(dst), s = touches_device(src);
    kind = d ? (s ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
             : (s ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
  }
  if (count == 0) return cudaSuccess;
  if (dst == NULL || src == NULL) return fail(cudaErrorInvalidValue);
  struct device_config c = config_of(device);
  double seconds = 0;
  switch (kind) {
    case cudaMemcpyHostToHost:
      if (touches_device(dst) || touches_device(src)) return fail(cudaErrorInvalidValue);
      break;
    case cudaMemcpyHostToDevice:
      if (!is_device_range(dst, count) || touches_device(src)) return fail(cudaErrorInvalidValue);
      seconds = (double)count / (c.h2d * 1e9);
      break;
    case cudaMemcpyDeviceToHost:
      if (touches_device(dst) || !is_device_range(src, count)) return fail(cudaErrorInvalidValue);
      seconds = (double)count / (c.d2h * 1e9);
      break;
    case cudaMemcpyDeviceToDevice:
      if (!is_device_range(dst, count) || !is_device_range(src, count)) {
        return fail(cudaErrorInvalidValue);
      }
      seconds = 2.0 * (double)count / (c.d2d * 1e9); /* read + write */
      break;
    default:
      return fail(cudaErrorInvalidMemcpyDirection);
  }
  hang();
  memmove(dst, src, count);
  advance(device, seconds);
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t count, enum cudaMemcpyKind kind) {
  ENTER(1);
  return copy(dst, src, count, kind);
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t count, enum cudaMemcpyKind kind,
                            cudaStream_t stream) {
  ENTER(1);
  (void)stream; /* everything runs in order, synchronously */
  return copy(dst, src, count, kind);
}

/* ---------------------------------------------------------------------------------------------
 * Peer access and peer copies
 */

cudaError_t cudaDeviceCanAccessPeer(int *canAccessPeer, int device, int peerDevice) {
  ENTER_QUERY(1, device);
  if (canAccessPeer == NULL) return fail(cudaErrorInvalidValue);
  pthread_mutex_lock(&lock);
  cudaError_t e = check_device_locked(device);
  if (e == cudaSuccess) e = check_device_locked(peerDevice);
  int can = e == cudaSuccess && device != peerDevice && !S.no_peer[device][peerDevice];
  pthread_mutex_unlock(&lock);
  if (e != cudaSuccess) return fail(e);
  *canAccessPeer = can;
  return cudaSuccess;
}

/* The errors cuda_runtime_api.h documents: flags not 0, a device that cannot access the peer
 * (cudaErrorInvalidDevice), access already enabled from this context. */
cudaError_t cudaDeviceEnablePeerAccess(int peerDevice, unsigned int flags) {
  ENTER(1);
  int device = current_device;
  if (flags != 0) return fail(cudaErrorInvalidValue);
  pthread_mutex_lock(&lock);
  cudaError_t e = check_device_locked(device);
  if (e == cudaSuccess) e = check_device_locked(peerDevice);
  if (e == cudaSuccess && (peerDevice == device || S.no_peer[device][peerDevice])) {
    e = cudaErrorInvalidDevice;
  }
  if (e == cudaSuccess && S.peer_enabled[device][peerDevice]) e = cudaErrorPeerAccessAlreadyEnabled;
  if (e == cudaSuccess) S.peer_enabled[device][peerDevice] = 1;
  pthread_mutex_unlock(&lock);
  return e == cudaSuccess ? cudaSuccess : fail(e);
}

cudaError_t cudaDeviceDisablePeerAccess(int peerDevice) {
  ENTER(1);
  int device = current_device;
  pthread_mutex_lock(&lock);
  cudaError_t e = check_device_locked(device);
  if (e == cudaSuccess) e = check_device_locked(peerDevice);
  if (e == cudaSuccess && !S.peer_enabled[device][peerDevice]) e = cudaErrorPeerAccessNotEnabled;
  if (e == cudaSuccess) S.peer_enabled[device][peerDevice] = 0;
  pthread_mutex_unlock(&lock);
  return e == cudaSuccess ? cudaSuccess : fail(e);
}

/* True when [p, p + n) lies in one allocation on `device`. */
static int is_range_on(const void *p, size_t n, int device) {
  pthread_mutex_lock(&lock);
  struct allocation *a = find_locked(p, n);
  int ok = a != NULL && a->device == device;
  pthread_mutex_unlock(&lock);
  return ok;
}

/* Peer access from src to dst gives the pair's GB/s; without it the runtime stages the copy
 * through host memory: device-to-host on src, then host-to-device on dst. */
static double peer_seconds(int src, int dst, size_t count) {
  pthread_mutex_lock(&lock);
  double gbps = S.peer_enabled[src][dst]
                    ? S.peer_gbps[src][dst]
                    : 1.0 / (1.0 / S.dev[src].d2h + 1.0 / S.dev[dst].h2d);
  pthread_mutex_unlock(&lock);
  return (double)count / (gbps * 1e9);
}

cudaError_t cudaMemcpyPeerAsync(void *dst, int dstDevice, const void *src, int srcDevice,
                                size_t count, cudaStream_t stream) {
  ENTER(1);
  (void)stream; /* everything runs in order, synchronously */
  pthread_mutex_lock(&lock);
  cudaError_t e = check_device_locked(current_device);
  if (e == cudaSuccess) e = check_device_locked(srcDevice);
  if (e == cudaSuccess) e = check_device_locked(dstDevice);
  int code = e == cudaSuccess ? S.peer_fail[srcDevice][dstDevice] : 0;
  pthread_mutex_unlock(&lock);
  if (e != cudaSuccess) return fail(e);
  if (count == 0) return cudaSuccess;
  if (dst == NULL || src == NULL) return fail(cudaErrorInvalidValue);
  if (!is_range_on(dst, count, dstDevice) || !is_range_on(src, count, srcDevice)) {
    return fail(cudaErrorInvalidValue);
  }
  if (code != 0) return fail((cudaError_t)code);
  hang();
  memmove(dst, src, count);
  advance(current_device, peer_seconds(srcDevice, dstDevice, count));
  return cudaSuccess;
}

cudaError_t cudaMemset(void *devPtr, int value, size_t count) {
  ENTER(1);
  int device = current_device;
  cudaError_t e = check_device(device);
  if (e != cudaSuccess) return fail(e);
  if (count == 0) return cudaSuccess;
  if (!is_device_range(devPtr, count)) return fail(cudaErrorInvalidValue);
  memset(devPtr, value, count);
  advance(device, (double)count / (config_of(device).d2d * 1e9));
  return cudaSuccess;
}

/* ---------------------------------------------------------------------------------------------
 * Events
 */

static int event_ok(cudaEvent_t e) { return e != NULL && e->magic == EVENT_MAGIC; }

cudaError_t cudaEventCreate(cudaEvent_t *event) {
  ENTER(1);
  if (event == NULL) return fail(cudaErrorInvalidValue);
  cudaError_t e = check_device(current_device);
  if (e != cudaSuccess) return fail(e);
  struct CUevent_st *ev = calloc(1, sizeof *ev);
  if (ev == NULL) return fail(cudaErrorMemoryAllocation);
  ev->magic = EVENT_MAGIC;
  ev->device = current_device;
  pthread_mutex_lock(&lock);
  ++S.live_events;
  pthread_mutex_unlock(&lock);
  *event = ev;
  return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *event, unsigned int flags) {
  (void)flags;
  return cudaEventCreate(event);
}

cudaError_t cudaEventDestroy(cudaEvent_t event) {
  ENTER(0);
  if (!event_ok(event)) return fail(cudaErrorInvalidResourceHandle);
  event->magic = 0;
  free(event);
  pthread_mutex_lock(&lock);
  --S.live_events;
  pthread_mutex_unlock(&lock);
  return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  ENTER(1);
  (void)stream;
  if (!event_ok(event)) return fail(cudaErrorInvalidResourceHandle);
  int device = current_device;
  cudaError_t e = check_device(device);
  if (e != cudaSuccess) return fail(e);
  pthread_mutex_lock(&lock);
  event->device = device;
  event->at = S.clock[device];
  event->recorded = 1;
  pthread_mutex_unlock(&lock);
  return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  ENTER(1);
  if (!event_ok(event)) return fail(cudaErrorInvalidResourceHandle);
  return cudaSuccess;
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end) {
  ENTER(1);
  if (ms == NULL) return fail(cudaErrorInvalidValue);
  if (!event_ok(start) || !event_ok(end) || !start->recorded || !end->recorded ||
      start->device != end->device) {
    return fail(cudaErrorInvalidResourceHandle);
  }
  *ms = (float)((end->at - start->at) * 1e3);
  return cudaSuccess;
}

/* ---------------------------------------------------------------------------------------------
 * Registration and launches
 */

void **__cudaRegisterFatBinary(void *fatCubin) {
  pthread_mutex_lock(&lock);
  void **handle = NULL;
  for (int i = 0; i < FAKE_MAX_MODULES; ++i) {
    if (!module_used[i]) {
      module_used[i] = 1;
      modules[i] = fatCubin;
      handle = &modules[i];
      break;
    }
  }
  pthread_mutex_unlock(&lock);
  if (handle == NULL) {
    fprintf(stderr, "fake-cudart: more than %d fat binaries registered\n", FAKE_MAX_MODULES);
    abort();
  }
  return handle;
}

void __cudaRegisterFatBinaryEnd(void **fatCubinHandle) { (void)fatCubinHandle; }

void __cudaUnregisterFatBinary(void **fatCubinHandle) {
  pthread_mutex_lock(&lock);
  for (int i = 0; i < FAKE_MAX_KERNELS; ++i) {
    if (kernels[i].module == fatCubinHandle) memset(&kernels[i], 0, sizeof kernels[i]);
  }
  for (int i = 0; i < FAKE_MAX_MODULES; ++i) {
    if (&modules[i] == fatCubinHandle) module_used[i] = 0;
  }
  pthread_mutex_unlock(&lock);
}

void __cudaRegisterFunction(void **fatCubinHandle, const char *hostFun, char *deviceFun,
                            const char *deviceName, int thread_limit, uint3 *tid, uint3 *bid,
                            dim3 *bDim, dim3 *gDim, int *wSize) {
  (void)deviceFun, (void)thread_limit, (void)tid, (void)bid, (void)bDim, (void)gDim, (void)wSize;
  pthread_mutex_lock(&lock);
  struct CUkern_st *k = NULL;
  for (int i = 0; i < FAKE_MAX_KERNELS && k == NULL; ++i) {
    if (kernels[i].host_fun == NULL) k = &kernels[i];
  }
  if (k == NULL) {
    pthread_mutex_unlock(&lock);
    fprintf(stderr, "fake-cudart: more than %d kernels registered\n", FAKE_MAX_KERNELS);
    abort();
  }
  k->host_fun = hostFun;
  k->module = fatCubinHandle;
  k->launches = 0;
  snprintf(k->name, sizeof k->name, "%s", deviceName);
  k->kind = strcmp(deviceName, "ap_pattern_fill") == 0    ? K_FILL
            : strcmp(deviceName, "ap_pattern_check") == 0 ? K_CHECK
            : strcmp(deviceName, "ap_fma32") == 0         ? K_FMA32
            : strcmp(deviceName, "ap_fma64") == 0         ? K_FMA64
                                                          : K_UNKNOWN;
  pthread_mutex_unlock(&lock);
}

unsigned __cudaPushCallConfiguration(dim3 gridDim, dim3 blockDim, size_t sharedMem,
                                     struct CUstream_st *stream) {
  if (config_depth >= (int)(sizeof config_stack / sizeof config_stack[0])) return 1;
  config_stack[config_depth++] = (struct call_config){gridDim, blockDim, sharedMem, stream};
  return 0;
}

cudaError_t __cudaPopCallConfiguration(dim3 *gridDim, dim3 *blockDim, size_t *sharedMem,
                                       void *stream) {
  if (config_depth == 0) return fail(cudaErrorInvalidConfiguration);
  struct call_config c = config_stack[--config_depth];
  *gridDim = c.grid;
  *blockDim = c.block;
  *sharedMem = c.shared;
  *(cudaStream_t *)stream = c.stream;
  return cudaSuccess;
}

static struct CUkern_st *kernel_by_host_fun(const void *hostFun) {
  struct CUkern_st *k = NULL;
  pthread_mutex_lock(&lock);
  for (int i = 0; i < FAKE_MAX_KERNELS && k == NULL; ++i) {
    if (kernels[i].host_fun != NULL && kernels[i].host_fun == hostFun) k = &kernels[i];
  }
  pthread_mutex_unlock(&lock);
  return k;
}

cudaError_t __cudaGetKernel(cudaKernel_t *kernel, const void *hostFun) {
  if (kernel == NULL) return fail(cudaErrorInvalidValue);
  struct CUkern_st *k = kernel_by_host_fun(hostFun);
  if (k == NULL) return fail(cudaErrorInvalidDeviceFunction);
  *kernel = k;
  return cudaSuccess;
}

static void emulate_fill(unsigned long long *words, size_t count, unsigned long long mask) {
  for (size_t i = 0; i < count; ++i) words[i] = (unsigned long long)(uintptr_t)&words[i] ^ mask;
}

static unsigned long long emulate_check(int device, unsigned long long *words, size_t count,
                                        unsigned long long expected, int address_mode) {
  /* Injected corruption: flip bits in up to `pending` words spread over the chunk. */
  pthread_mutex_lock(&lock);
  unsigned long long pending = S.dev[device].corrupt_pending;
  unsigned long long flips = pending < count ? pending : count;
  S.dev[device].corrupt_pending -= flips;
  pthread_mutex_unlock(&lock);
  for (unsigned long long j = 0; j < flips; ++j) {
    size_t index = (size_t)(j * (count / flips));
    words[index] ^= 1ULL << (j % 64);
  }
  unsigned long long bad = 0;
  for (size_t i = 0; i < count; ++i) {
    unsigned long long want =
        address_mode ? ((unsigned long long)(uintptr_t)&words[i] ^ expected) : expected;
    if (words[i] != want) ++bad;
  }
  return bad;
}

static cudaError_t launch(struct CUkern_st *k, dim3 grid, dim3 block, void **args) {
  ensure();
  int code = injected("cudaLaunchKernel", 1);
  if (code != 0) return fail((cudaError_t)code);
  int device = current_device;
  cudaError_t e = check_device(device);
  if (e != cudaSuccess) return fail(e);
  if (k == NULL || k->host_fun == NULL) return fail(cudaErrorInvalidDeviceFunction);
  unsigned long long blocks = (unsigned long long)grid.x * grid.y * grid.z;
  unsigned long long threads_per_block = (unsigned long long)block.x * block.y * block.z;
  if (blocks == 0 || threads_per_block == 0 || threads_per_block > 1024) {
    return fail(cudaErrorInvalidConfiguration);
  }
  if (args == NULL && k->kind != K_UNKNOWN) return fail(cudaErrorInvalidValue);
  struct device_config c = config_of(device);
  double seconds = 0;
  hang();
  switch (k->kind) {
    case K_FILL: {
      unsigned long long *words = *(unsigned long long **)args[0];
      size_t count = *(size_t *)args[1];
      unsigned long long mask = *(unsigned long long *)args[2];
      if (count > 0 && !is_device_range(words, count * 8)) return fail(cudaErrorIllegalAddress);
      emulate_fill(words, count, mask);
      seconds = (double)count * 8 / (c.d2d * 1e9);
      break;
    }
    case K_CHECK: {
      unsigned long long *words = *(unsigned long long **)args[0];
      size_t count = *(size_t *)args[1];
      unsigned long long expected = *(unsigned long long *)args[2];
      int address_mode = *(int *)args[3];
      unsigned long long *counter = *(unsigned long long **)args[4];
      if ((count > 0 && !is_device_range(words, count * 8)) || !is_device_range(counter, 8)) {
        return fail(cudaErrorIllegalAddress);
      }
      unsigned long long bad = emulate_check(device, words, count, expected, address_mode);
      __atomic_add_fetch(counter, bad, __ATOMIC_SEQ_CST);
      seconds = (double)count * 8 / (c.d2d * 1e9);
      break;
    }
    case K_FMA32:
    case K_FMA64: {
      void *out = *(void **)args[0];
      int iterations = *(int *)args[1];
      size_t size = k->kind == K_FMA32 ? sizeof(float) : sizeof(double);
      if (!is_device_range(out, size)) return fail(cudaErrorIllegalAddress);
      double fmas = (double)blocks * (double)threads_per_block *
                    (double)(iterations > 0 ? iterations : 0) * FAKE_FMA_CHAINS;
      double tflops = k->kind == K_FMA32 ? c.tflops32 : c.tflops64;
      seconds = 2.0 * fmas / (tflops * 1e12);
      break;
    }
    case K_UNKNOWN:
    default:
      return fail(cudaErrorInvalidDeviceFunction);
  }
  advance(device, seconds);
  pthread_mutex_lock(&lock);
  ++k->launches;
  pthread_mutex_unlock(&lock);
  return cudaSuccess;
}

cudaError_t __cudaLaunchKernel(cudaKernel_t kernel, dim3 gridDim, dim3 blockDim, void **args,
                               size_t sharedMem, cudaStream_t stream) {
  (void)sharedMem, (void)stream;
  return launch(kernel, gridDim, blockDim, args);
}

cudaError_t __cudaLaunchKernel_ptsz(cudaKernel_t kernel, dim3 gridDim, dim3 blockDim, void **args,
                                    size_t sharedMem, cudaStream_t stream) {
  (void)sharedMem, (void)stream;
  return launch(kernel, gridDim, blockDim, args);
}

cudaError_t cudaLaunchKernel(const void *func, dim3 gridDim, dim3 blockDim, void **args,
                             size_t sharedMem, cudaStream_t stream) {
  (void)sharedMem, (void)stream;
  struct CUkern_st *k = kernel_by_host_fun(func);
  if (k == NULL) return fail(cudaErrorInvalidDeviceFunction);
  return launch(k, gridDim, blockDim, args);
}
