/*
 * Autopilot CUDA probe: one C function per whole measurement.
 *
 * Every function sets its device, allocates, measures, frees and returns a cudaError_t as an int
 * (0 on success), so each call is self-contained. ap_device_count, ap_pci_bus_id and
 * ap_device_by_bus_id only query the runtime's device table and create no context; every other
 * function creates the device's primary context (cudaSetDevice) and destroys it again before
 * returning. That matters because the Node binding calls
 * these functions through koffi's .async, which runs each call on whichever worker thread is free:
 * CUDA's per-thread state (the current device) does not carry from one call to the next.
 *
 * Results go to out-parameters; they are written only on success.
 */
#ifndef AUTOPILOT_PROBE_H
#define AUTOPILOT_PROBE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define AP_EXPORT __attribute__((visibility("default")))
#else
#define AP_EXPORT
#endif

/* Copy directions of ap_copy_bandwidth. */
#define AP_HOST_TO_DEVICE 0
#define AP_DEVICE_TO_HOST 1

/*
 * Devices the runtime sees. cudaErrorInsufficientDriver (35, no driver) and cudaErrorNoDevice
 * (100) are not errors here: they give success with *count = 0.
 */
AP_EXPORT int ap_device_count(int *count);

/*
 * PCI bus id of a CUDA device, "0000:06:00.0" (4-hex-digit domain), NUL-terminated in buf.
 * len must be at least 13.
 */
AP_EXPORT int ap_pci_bus_id(int device, char *buf, int len);

/*
 * The CUDA ordinal of the device at a PCI bus id: cudaDeviceGetByPCIBusId, which accepts
 * "[domain]:[bus]:[device].[function]" (hex), "[domain]:[bus]:[device]" or
 * "[bus]:[device].[function]". It names no ordinal before it has one, so the exporter can look up
 * only the GPUs it will measure and never touch a busy one. A bus id CUDA does not know answers
 * cudaErrorInvalidValue (1) or cudaErrorInvalidDevice (101), the only failures the runtime API
 * documents besides initialisation errors; the error is cleared from the thread before returning.
 */
AP_EXPORT int ap_device_by_bus_id(const char *bus_id, int *device);

/* Where ap_copy_bandwidth's pinned host buffer came from (its *placement). */
#define AP_PLACEMENT_NOT_ASKED 0     /* numa_node < 0: cudaMallocHost, wherever the kernel put it */
#define AP_PLACEMENT_BOUND 1         /* mmap + mbind(MPOL_BIND, numa_node) + cudaHostRegister */
#define AP_PLACEMENT_OS_REFUSED 2    /* mmap or mbind failed (*placement_error: errno); fell back */
#define AP_PLACEMENT_CUDA_REFUSED 3  /* cudaHostRegister failed (*placement_error: cudaError_t) */

/*
 * Pinned host memory to the device (direction 0) or back (direction 1): one warm-up copy of
 * `bytes`, then `repetitions` copies timed with CUDA events.
 * *gbps = bytes * repetitions / 1e9 / seconds.
 *
 * With numa_node >= 0 the host buffer is bound to that NUMA node (the GPU's own, so a two-socket
 * host copies through the GPU's root complex, not across the socket link): anonymous mmap,
 * mbind(MPOL_BIND) through the syscall (no libnuma), every page touched, then cudaHostRegister.
 * When the kernel refuses (a container without CAP_SYS_NICE under Docker's default seccomp
 * profile gets EPERM; a node outside the cgroup's cpuset.mems or without memory gets EINVAL) or
 * CUDA cannot register the range, it falls back to cudaMallocHost and says why in *placement and
 * *placement_error (0 when there is nothing to say).
 */
AP_EXPORT int ap_copy_bandwidth(int device, int direction, size_t bytes, int repetitions,
                                int numa_node, double *gbps, int *placement,
                                int *placement_error);

/*
 * Device-to-device copy of `bytes` through HBM: one warm-up copy, then `repetitions` timed
 * copies. *gbps counts bytes read plus bytes written: 2 * bytes * repetitions / 1e9 / seconds.
 */
AP_EXPORT int ap_hbm_bandwidth(int device, size_t bytes, int repetitions, double *gbps);

/*
 * Memory pattern test over `fraction` (0 < fraction <= 1) of the device's free memory
 * (cudaMemGetInfo). All of it is allocated at once in chunks, then for each pattern (bytes 0x00,
 * 0xFF, 0xAA, 0x55, then each word's own address, then its complement) every chunk is written and
 * then every chunk is checked on the GPU. *mismatches counts 64-bit words that read back wrong,
 * once per pattern they fail; *bytes_tested is the memory covered (once, not per pattern).
 */
AP_EXPORT int ap_memory_pattern(int device, double fraction, unsigned long long *mismatches,
                                unsigned long long *bytes_tested);

/*
 * Arithmetic throughput of fused multiply-adds, precision 32 (float) or 64 (double), over enough
 * blocks to fill every SM. *tflops = 2 * FMAs / seconds / 1e12.
 */
AP_EXPORT int ap_flops(int device, int precision, double *tflops);

/*
 * What ap_p2p_bandwidth returns for a pair whose source cannot reach the destination's memory
 * directly (cudaDeviceCanAccessPeer says 0): an answer, not an error. Negative, so it is no
 * cudaError_t; ap_error_string does not know it.
 */
#define AP_NO_PEER_ACCESS (-1)

/*
 * Whether device `src` can access the memory of device `dst` directly (cudaDeviceCanAccessPeer):
 * *can 1 or 0. A device-table query: no context is created on either device.
 */
AP_EXPORT int ap_can_access_peer(int src, int dst, int *can);

/*
 * Unidirectional peer copy from device `src` to device `dst` (src != dst): `bytes` on each device,
 * peer access enabled from src to dst (cudaDeviceEnablePeerAccess; already enabled is fine), one
 * warm-up cudaMemcpyPeerAsync, then `repetitions` of them timed with events on src's legacy
 * default stream. *gbps = bytes * repetitions / 1e9 / seconds. AP_NO_PEER_ACCESS, with no context
 * created, when src cannot access dst. Both devices' primary contexts are destroyed before
 * returning (which also ends the peer mapping).
 */
AP_EXPORT int ap_p2p_bandwidth(int src, int dst, size_t bytes, int repetitions, double *gbps);

/* cudaGetErrorString of a code these functions returned. */
AP_EXPORT const char *ap_error_string(int code);

#ifdef __cplusplus
}
#endif

#endif /* AUTOPILOT_PROBE_H */
