// Reference for pciebw on a GPU host: the plainest native pinned copy loop, with the same sizes and
// timing method as ap_copy_bandwidth, so that the probe's figure can be compared with it in one run.
// Usage: copy-reference <device> <h2d|d2h> [bytes] [repetitions]; prints GB/s on one line.
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const char *what, cudaError_t code) {
  fprintf(stderr, "%s: %s (%d)\n", what, cudaGetErrorString(code), (int)code);
  return 1;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s <device> <h2d|d2h> [bytes] [repetitions]\n", argv[0]);
    return 2;
  }
  int device = atoi(argv[1]);
  int toDevice = strcmp(argv[2], "h2d") == 0;
  size_t bytes = argc > 3 ? strtoull(argv[3], NULL, 10) : (size_t)64 << 20;
  int repetitions = argc > 4 ? atoi(argv[4]) : 16;
  cudaError_t rc;
  void *host = NULL, *dev = NULL;
  cudaEvent_t start, stop;
  if ((rc = cudaSetDevice(device)) != cudaSuccess) return fail("cudaSetDevice", rc);
  if ((rc = cudaMallocHost(&host, bytes)) != cudaSuccess) return fail("cudaMallocHost", rc);
  if ((rc = cudaMalloc(&dev, bytes)) != cudaSuccess) return fail("cudaMalloc", rc);
  memset(host, 1, bytes);
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  void *dst = toDevice ? dev : host;
  const void *src = toDevice ? host : dev;
  cudaMemcpyKind kind = toDevice ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost;
  if ((rc = cudaMemcpy(dst, src, bytes, kind)) != cudaSuccess) return fail("cudaMemcpy", rc);
  cudaEventRecord(start, 0);
  for (int i = 0; i < repetitions; i++) cudaMemcpy(dst, src, bytes, kind);
  cudaEventRecord(stop, 0);
  cudaEventSynchronize(stop);
  float ms = 0;
  cudaEventElapsedTime(&ms, start, stop);
  printf("%.3f\n", (double)bytes * repetitions / 1e9 / (ms / 1e3));
  cudaFreeHost(host);
  cudaFree(dev);
  return 0;
}
