/*
 * A fake libnvidia-ml.so.1 for tests on machines without a GPU.
 *
 * It exports the NVML functions exporter/native/nvml.ts uses, with the prototypes, struct layouts
 * and return codes of nvml.h (see docs/reference/gpu-interfaces.md §2), over an in-memory node:
 * by default 8 idle, healthy "NVIDIA H200" GPUs on PCIe Gen5 x16, ECC on, MIG off, driver
 * 580.159.04.
 *
 * Faults are injected with a scenario, a semicolon-separated list of key=value items (GPU indexes
 * I are NVML indexes):
 *   gpus=N               N GPUs (default 8)             nodevices=1        no GPU at all
 *   name=TEXT            every GPU's name               initfail=CODE      nvmlInit_v2 returns CODE
 *   powerbrake=I         reasons 0x80|0x8 (not idle)    thermal=I          reasons 0x40|0x8
 *   swpowercap=I         reasons 0x4 (not a fault)      mig=I              MIG mode on
 *   pending=I            a row remap waits for reset    remapfail=I        a row remap failed
 *   uncorrectable=I:N    N uncorrectable remapped rows  dbe=I:N            N volatile DBEs
 *   retirepending=I      pages wait for retirement      noecc=I            ECC mode off
 *   link=I:GxW           current PCIe link GenG xW (the maximum stays Gen5 x16)
 *   procs=I:N            N compute processes            xid=I:CODE[,I:CODE...] queued XID events
 *   numa=I:N             GPU I's memory affinity is NUMA node N (default: GPUs 0-3 node 0, the
 *                        others node 1, as on a two-socket HGX board)
 *   xidafter=I:CODE:MS   one XID on GPU I, delivered MS ms after the scenario is applied
 *   hang=FUNCTION:MS     FUNCTION sleeps MS ms first    notsupported=FUNCTION  it returns 3
 *   fail=FUNCTION:CODE   FUNCTION returns CODE (e.g. 999 UNKNOWN, 15 GPU_IS_LOST), after any hang
 *   failnext=FUNCTION:CODE:N  FUNCTION's next N calls return CODE, later calls answer normally
 *   registerfail=I:CODE  nvmlDeviceRegisterEvents of GPU I returns CODE (e.g. 15 GPU_IS_LOST,
 *                        999 UNKNOWN); CODE 0 lets it register again
 *   aggdbe=I:N           N aggregate (lifetime) uncorrected ECC errors, the volatile count unchanged:
 *                        errors from before the driver last loaded
 *   hwslowdown=I         reasons 0x8 alone (not idle), on every read
 *   transient=I:MASK:N   the next N reads of GPU I's clock event reasons return MASK (decimal, e.g.
 *                        8 for hw_slowdown), later reads its reasons as before: a passing P-state bit
 *   slowdown=I:KIND:PCT  GPU I's accumulated KIND (hwthermal or powerbrake) slowdown duration grows
 *                        by PCT % of wall time from when the scenario is applied, whatever its
 *                        reasons say (a pulsing slowdown that single reads can miss)
 *   nofields=1           every slowdown-duration field answers NOT_SUPPORTED (drivers before R575)
 *   driver=VERSION       nvmlSystemGetDriverVersion answers VERSION (default 580.159.04); from 590
 *                        on, the slowdown-duration field ids follow the CUDA 13.1 header (below)
 *   nvlinks=N            every GPU has N NVLinks (default 18, as an H200 SXM; at most 36); 0: no
 *                        NVLink, the NVLink and fabric functions answer NOT_SUPPORTED
 *   linkdown=I:L         GPU I's link L is inactive (nvmlDeviceGetNvLinkState NVML_FEATURE_DISABLED)
 *   nvlinkerr=I:L:COUNTER:N  GPU I link L's COUNTER (replay, recovery, crc_flit, crc_data) grows
 *                        by N at each read of the GPU's total of that counter (field 38, 45, 52
 *                        or 59 below), or with nofields=1 at each read of the link's counter: a
 *                        counter that climbs by a known count per round (the first round reads N)
 *   fabric=I:STATE:STATUS  GPU I's fabric probe: NVML_GPU_FABRIC_STATE_* 0-3 and the nvmlReturn_t
 *                        status (default 3 completed, 0 success: Fabric Manager registered it)
 *   fabricversion=2      nvmlDeviceGetGpuFabricInfoV takes only nvmlGpuFabricInfo_v2 and answers
 *                        ARGUMENT_VERSION_MISMATCH (25) to v3, like a driver before v3
 * Defaults beyond the above: board serials 1654923001700, ...01701, ... by index (made up);
 * clock event reasons 0x1 (GPU idle, as the idle H200 capture shows);
 * nvmlDeviceGetRetiredPagesPendingStatus NOT_SUPPORTED (Hopper remaps rows; nvidia-smi shows N/A)
 * unless retirepending=I; nvmlDeviceGetRemappedRows NOT_SUPPORTED on a GPU in MIG mode (nvml.h).
 * nvmlDeviceGetFieldValues answers the accumulated slowdown durations (nanoseconds, unsigned long
 * long) under the ids the driver version uses: 251-253 (SW thermal, HW thermal, HW power brake) as
 * nvml.h 12.9 and 13.0.39 number them and nvidia-smi 580.65.06 asks for them, 269-271 from driver
 * 590 on, as nvml.h 13.1.2 renumbered them (NVIDIA/go-nvml gen/nvml/nvml.h history); they stay 0
 * unless slowdown= makes them grow; any other field id answers NOT_SUPPORTED in its own entry.
 * Scenarios are given:
 *   - in another process (an exporter started by a test): the environment variable
 *     FAKE_NVML_SCENARIO, read by the first nvmlInit_v2 after the library loads or after a reset;
 *   - in the test's own process (through koffi): fakenvml_apply(scenario), fakenvml_reset(),
 *     fakenvml_push_xid(gpu, xid) and fakenvml_calls(fn). jest gives each test file its own copy
 *     of process.env, which C getenv does not see, so in-process tests must use these functions.
 *
 * koffi runs .async calls on several worker threads, so every piece of state sits behind one
 * mutex; sleeps (hang=, nvmlEventSetWait_v2) happen outside it so other calls keep answering.
 *
 * Built twice by the Makefile: the default build, and one with -DFAKE_OLD_DRIVER that lacks
 * nvmlDeviceGetCurrentClocksEventReasons and nvmlDeviceGetMigMode, like a driver before R535, and
 * nvmlDeviceGetComputeRunningProcesses_v3, like one before R510 (both builds have _v2), and both
 * fabric functions (nvmlDeviceGetGpuFabricInfo and ...InfoV), like a driver before Hopper's.
 *
 * NVLink, by default: 18 links per GPU, all active, every error counter 0 (NVML_NVLINK_ERROR_DL_ECC_DATA
 * answers NOT_SUPPORTED, as on NVLink 4); a link past the GPU's answers INVALID_ARGUMENT; the
 * field NVML_FI_DEV_NVLINK_LINK_COUNT (91) answers the count, and the fields
 * NVML_FI_DEV_NVLINK_{CRC_FLIT,CRC_DATA,REPLAY,RECOVERY}_ERROR_COUNT_TOTAL (38, 45, 52, 59) the sum
 * of that counter over the GPU's links (nofields=1 makes them all NOT_SUPPORTED).
 * Fabric, by default: completed with success on every GPU, as on an HGX H200 whose Fabric Manager
 * runs (an HGX board is an NVSwitch system).
 *
 * The process query on a GPU in MIG mode answers NO_PERMISSION: nvml.h gives the whole GPU's
 * processes there "only if the caller has appropriate privileges", and the fake is unprivileged.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define API __attribute__((visibility("default")))

typedef int nvmlReturn_t;
typedef struct fake_gpu *nvmlDevice_t;
typedef struct fake_event_set *nvmlEventSet_t;

enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_UNINITIALIZED = 1,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_NO_PERMISSION = 4,
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_TIMEOUT = 10,
    NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25,
    NVML_ERROR_UNKNOWN = 999,
};

/* nvml.h layouts (x86_64 / aarch64 LP64). */
typedef struct {
    char busIdLegacy[16];
    unsigned int domain;
    unsigned int bus;
    unsigned int device;
    unsigned int pciDeviceId;
    unsigned int pciSubSystemId;
    char busId[32];
} nvmlPciInfo_t;

typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId;
    unsigned int computeInstanceId;
} nvmlProcessInfo_t;

typedef struct {
    nvmlDevice_t device;
    unsigned long long eventType;
    unsigned long long eventData;
    unsigned int gpuInstanceId;
    unsigned int computeInstanceId;
} nvmlEventData_t;

_Static_assert(sizeof(nvmlPciInfo_t) == 68, "nvmlPciInfo_t is 68 bytes");
_Static_assert(sizeof(nvmlProcessInfo_t) == 24, "nvmlProcessInfo_t is 24 bytes");
_Static_assert(sizeof(nvmlEventData_t) == 32, "nvmlEventData_t is 32 bytes");

/* nvml.h's fabric structures: the legacy one, v2 (version first, healthMask last) and v3
 * (healthSummary after healthMask). */
typedef struct {
    unsigned char clusterUuid[16];
    nvmlReturn_t status;
    unsigned int cliqueId;
    unsigned char state;
} nvmlGpuFabricInfo_t;

typedef struct {
    unsigned int version;
    unsigned char clusterUuid[16];
    nvmlReturn_t status;
    unsigned int cliqueId;
    unsigned char state;
    unsigned int healthMask;
} nvmlGpuFabricInfo_v2_t;

typedef struct {
    unsigned int version;
    unsigned char clusterUuid[16];
    nvmlReturn_t status;
    unsigned int cliqueId;
    unsigned char state;
    unsigned int healthMask;
    unsigned char healthSummary;
} nvmlGpuFabricInfo_v3_t;

_Static_assert(sizeof(nvmlGpuFabricInfo_t) == 28, "nvmlGpuFabricInfo_t is 28 bytes");
_Static_assert(sizeof(nvmlGpuFabricInfo_v2_t) == 36, "nvmlGpuFabricInfo_v2_t is 36 bytes");
_Static_assert(sizeof(nvmlGpuFabricInfo_v3_t) == 40, "nvmlGpuFabricInfo_v3_t is 40 bytes");
/* NVML_STRUCT_VERSION(GpuFabricInfo, N): sizeof | N << 24 */
#define FABRIC_INFO_V2 (unsigned int)(sizeof(nvmlGpuFabricInfo_v2_t) | (2u << 24))
#define FABRIC_INFO_V3 (unsigned int)(sizeof(nvmlGpuFabricInfo_v3_t) | (3u << 24))
#define FABRIC_HEALTH_SUMMARY_HEALTHY 1

#define DEFAULT_DRIVER_VERSION "580.159.04"
#define DEFAULT_NAME "NVIDIA H200"
#define DEFAULT_GPUS 8u
#define MAX_GPUS 32u
#define MAX_EVENTS 1024u
#define MAX_SETS 16u
#define MAX_RULES 32u
#define MAX_COUNTERS 64u
#define FN_LEN 64u
#define MAX_NVLINKS 36u /* NVML_NVLINK_MAX_LINKS */
#define DEFAULT_NVLINKS 18u
#define NVLINK_COUNTERS 4u /* replay, recovery, crc_flit, crc_data */
#define FIELD_NVLINK_LINK_COUNT 91u

#define REASON_GPU_IDLE 0x1ull
#define REASON_SW_POWER_CAP 0x4ull
#define REASON_HW_SLOWDOWN 0x8ull
#define REASON_HW_THERMAL 0x40ull
#define REASON_HW_POWER_BRAKE 0x80ull
#define EVENT_XID_CRITICAL 0x8ull
#define SUPPORTED_EVENTS 0xff9full /* what the H200 capture reported */

struct fake_gpu {
    char name[96];
    char uuid[96];
    char serial[30]; /* NVML_DEVICE_SERIAL_BUFFER_SIZE */
    unsigned int bus;
    unsigned int cur_gen, cur_width, max_gen, max_width;
    unsigned int corr_rows, unc_rows, remap_pending, remap_failure;
    unsigned long long reasons;
    int ecc_enabled;
    unsigned long long dbe_volatile, dbe_aggregate;
    nvmlReturn_t register_fail;
    int retire_supported, retire_pending;
    unsigned int procs;
    unsigned int numa_node;
    int mig_enabled;
    unsigned long long transient_mask;
    unsigned int transient_reads;
    /* % of wall time the HW thermal [0] and power brake [1] durations grow by since slowdown_since */
    unsigned int slowdown_pct[2];
    unsigned long long slowdown_since;
    unsigned int nvlinks;
    unsigned char link_down[MAX_NVLINKS];
    unsigned long long nvlink_errors[MAX_NVLINKS][NVLINK_COUNTERS];
    unsigned long long nvlink_error_step[MAX_NVLINKS][NVLINK_COUNTERS];
    unsigned char fabric_state;
    nvmlReturn_t fabric_status;
};

struct fake_event_set {
    int live;
    unsigned long long mask[MAX_GPUS];
};

struct fake_event {
    unsigned int gpu;
    unsigned long long type;
    unsigned long long data;
    /* now_ms() from which the event may be delivered; 0: at once. */
    unsigned long long due;
};

struct rule {
    char fn[FN_LEN];
    unsigned int ms; /* hang rules only */
};

/* failnext=: the next `left` calls of fn answer `code`. */
struct countdown {
    char fn[FN_LEN];
    nvmlReturn_t code;
    unsigned long left;
};

struct counter {
    char fn[FN_LEN];
    unsigned long calls;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct fake_gpu gpus[MAX_GPUS];
static unsigned int gpu_count;
static unsigned int init_count;
static int env_applied;
static nvmlReturn_t init_fail;
static struct fake_event_set sets[MAX_SETS];
static struct fake_event events[MAX_EVENTS];
static unsigned int event_count;
static struct rule hangs[MAX_RULES];
static unsigned int hang_count;
static struct rule unsupported[MAX_RULES];
static unsigned int unsupported_count;
static struct rule failing[MAX_RULES]; /* ms holds the nvmlReturn_t to answer */
static unsigned int failing_count;
static struct counter counters[MAX_COUNTERS];
static unsigned int counter_count;
static char driver_version[80];
static int no_fields;
static unsigned int fabric_version_max;

/* nvml.h nvmlFieldValue_t (x86_64 / aarch64 LP64); the value union is 8 bytes. */
typedef struct {
    unsigned int fieldId;
    unsigned int scopeId;
    long long timestamp;
    long long latencyUsec;
    int valueType;
    nvmlReturn_t nvmlReturn;
    unsigned long long value;
} nvmlFieldValue_t;

_Static_assert(sizeof(nvmlFieldValue_t) == 40, "nvmlFieldValue_t is 40 bytes");
static struct countdown countdowns[MAX_RULES];
static unsigned int countdown_count;

/* Bus numbers of an HGX H100/H200 board's eight GPUs; more GPUs get 0xE1, 0xE2, ... */
static const unsigned int hgx_bus[8] = {0x1b, 0x43, 0x52, 0x61, 0x9d, 0xc3, 0xd1, 0xdf};

static void default_gpu(unsigned int i) {
    struct fake_gpu *g = &gpus[i];
    memset(g, 0, sizeof *g);
    snprintf(g->name, sizeof g->name, "%s", DEFAULT_NAME);
    snprintf(g->uuid, sizeof g->uuid, "GPU-%08x-feb7-44a7-b1fb-fe8546bcd5%02x",
             0x4930c808u ^ (i * 0x9e3779b1u), i);
    /* 13 digits, as the board tags of data-centre GPUs read; made up, unique per index. */
    snprintf(g->serial, sizeof g->serial, "16549230%05u", 1700u + i);
    g->bus = i < 8 ? hgx_bus[i] : 0xe1 + (i - 8);
    g->cur_gen = g->max_gen = 5;
    g->cur_width = g->max_width = 16;
    g->reasons = REASON_GPU_IDLE;
    g->ecc_enabled = 1;
    g->retire_supported = 0; /* Hopper retires rows, not pages: nvidia-smi shows N/A */
    g->numa_node = i < 4 ? 0 : 1;
    g->nvlinks = DEFAULT_NVLINKS;
    g->fabric_state = 3; /* NVML_GPU_FABRIC_STATE_COMPLETED */
    g->fabric_status = NVML_SUCCESS;
}

static void reset_locked(void) {
    for (unsigned int i = 0; i < MAX_GPUS; i++) default_gpu(i);
    gpu_count = DEFAULT_GPUS;
    init_count = 0;
    env_applied = 0;
    init_fail = NVML_SUCCESS;
    memset(sets, 0, sizeof sets);
    event_count = 0;
    hang_count = 0;
    unsupported_count = 0;
    failing_count = 0;
    counter_count = 0;
    snprintf(driver_version, sizeof driver_version, "%s", DEFAULT_DRIVER_VERSION);
    no_fields = 0;
    fabric_version_max = 3;
    countdown_count = 0;
}

__attribute__((constructor)) static void fake_nvml_load(void) { reset_locked(); }

static void sleep_ms(unsigned int ms) {
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

static unsigned long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long long)ts.tv_sec * 1000ull + (unsigned long long)ts.tv_nsec / 1000000ull;
}

static void count_call_locked(const char *fn) {
    for (unsigned int i = 0; i < counter_count; i++) {
        if (strcmp(counters[i].fn, fn) == 0) {
            counters[i].calls++;
            return;
        }
    }
    if (counter_count < MAX_COUNTERS) {
        snprintf(counters[counter_count].fn, FN_LEN, "%s", fn);
        counters[counter_count].calls = 1;
        counter_count++;
    }
}

/*
 * Every NVML entry point starts here: counts the call, sleeps for a hang= rule (outside the lock),
 * then answers NOT_SUPPORTED for a notsupported= rule, the code of a fail= or failnext= rule, or
 * UNINITIALIZED before nvmlInit_v2.
 */
static nvmlReturn_t enter(const char *fn, int needs_init) {
    unsigned int ms = 0;
    int not_supported = 0;
    nvmlReturn_t fail = NVML_SUCCESS;
    pthread_mutex_lock(&lock);
    count_call_locked(fn);
    for (unsigned int i = 0; i < hang_count; i++)
        if (strcmp(hangs[i].fn, fn) == 0) ms = hangs[i].ms;
    for (unsigned int i = 0; i < unsupported_count; i++)
        if (strcmp(unsupported[i].fn, fn) == 0) not_supported = 1;
    for (unsigned int i = 0; i < failing_count; i++)
        if (strcmp(failing[i].fn, fn) == 0) fail = (nvmlReturn_t)failing[i].ms;
    for (unsigned int i = 0; i < countdown_count && fail == NVML_SUCCESS; i++) {
        if (strcmp(countdowns[i].fn, fn) == 0 && countdowns[i].left > 0) {
            countdowns[i].left--;
            fail = countdowns[i].code;
        }
    }
    pthread_mutex_unlock(&lock);
    if (ms > 0) sleep_ms(ms);
    if (not_supported) return NVML_ERROR_NOT_SUPPORTED;
    if (fail != NVML_SUCCESS) return fail;
    if (needs_init) {
        pthread_mutex_lock(&lock);
        int initialized = init_count > 0;
        pthread_mutex_unlock(&lock);
        if (!initialized) return NVML_ERROR_UNINITIALIZED;
    }
    return NVML_SUCCESS;
}

#define ENTER()                                       \
    do {                                              \
        nvmlReturn_t entered_ = enter(__func__, 1);   \
        if (entered_ != NVML_SUCCESS) return entered_; \
    } while (0)

/* The GPU behind a handle, or NULL; call with the lock held. */
static struct fake_gpu *gpu_locked(nvmlDevice_t device) {
    uintptr_t p = (uintptr_t)device, base = (uintptr_t)gpus;
    if (p < base || p >= base + gpu_count * sizeof(struct fake_gpu)) return NULL;
    if ((p - base) % sizeof(struct fake_gpu) != 0) return NULL;
    return device;
}

static int set_rule(struct rule *rules, unsigned int *count, const char *fn, unsigned int ms) {
    for (unsigned int i = 0; i < *count; i++) {
        if (strcmp(rules[i].fn, fn) == 0) {
            rules[i].ms = ms;
            return 0;
        }
    }
    if (*count >= MAX_RULES || strlen(fn) == 0 || strlen(fn) >= FN_LEN) return -1;
    snprintf(rules[*count].fn, FN_LEN, "%s", fn);
    rules[*count].ms = ms;
    (*count)++;
    return 0;
}

static int push_event_at_locked(unsigned int gpu, unsigned long long type,
                                unsigned long long data, unsigned long long due) {
    if (gpu >= MAX_GPUS || event_count >= MAX_EVENTS) return -1;
    events[event_count].gpu = gpu;
    events[event_count].type = type;
    events[event_count].data = data;
    events[event_count].due = due;
    event_count++;
    return 0;
}

static int push_event_locked(unsigned int gpu, unsigned long long type, unsigned long long data) {
    return push_event_at_locked(gpu, type, data, 0);
}

/* Parses an unsigned decimal number that fills the whole of [s, end). */
static int parse_uint(const char *s, const char *end, unsigned long long *out) {
    if (s == end) return -1;
    unsigned long long v = 0;
    for (const char *c = s; c < end; c++) {
        if (*c < '0' || *c > '9') return -1;
        v = v * 10 + (unsigned long long)(*c - '0');
        if (v > 0xffffffffull) return -1;
    }
    *out = v;
    return 0;
}

static int parse_gpu(const char *s, const char *end, unsigned int *gpu) {
    unsigned long long v;
    if (parse_uint(s, end, &v) != 0 || v >= MAX_GPUS) return -1;
    *gpu = (unsigned int)v;
    return 0;
}

/* "I:N" → gpu I, number N. */
static int parse_gpu_number(const char *value, unsigned int *gpu, unsigned long long *n) {
    const char *colon = strchr(value, ':');
    if (colon == NULL) return -1;
    if (parse_gpu(value, colon, gpu) != 0) return -1;
    return parse_uint(colon + 1, colon + strlen(colon), n);
}

/* failnext=FUNCTION:CODE:N; the lock is held. */
static int apply_failnext(const char *value) {
    const char *last = strrchr(value, ':');
    if (last == NULL || last == value) return -1;
    const char *middle = last - 1;
    while (middle > value && *middle != ':') middle--;
    unsigned long long code, times;
    if (*middle != ':' || (size_t)(middle - value) >= FN_LEN || middle == value) return -1;
    if (parse_uint(middle + 1, last, &code) != 0 || code == 0) return -1;
    if (parse_uint(last + 1, value + strlen(value), &times) != 0) return -1;
    struct countdown *slot = NULL;
    for (unsigned int i = 0; i < countdown_count; i++)
        if (strncmp(countdowns[i].fn, value, (size_t)(middle - value)) == 0 &&
            countdowns[i].fn[middle - value] == '\0')
            slot = &countdowns[i];
    if (slot == NULL) {
        if (countdown_count >= MAX_RULES) return -1;
        slot = &countdowns[countdown_count++];
        memcpy(slot->fn, value, (size_t)(middle - value));
        slot->fn[middle - value] = '\0';
    }
    slot->code = (nvmlReturn_t)code;
    slot->left = (unsigned long)times;
    return 0;
}

/* transient=I:MASK:N; the lock is held. */
static int apply_transient(const char *value) {
    const char *first = strchr(value, ':');
    const char *second = first ? strchr(first + 1, ':') : NULL;
    unsigned int gpu;
    unsigned long long mask, reads;
    if (second == NULL || parse_gpu(value, first, &gpu) != 0 ||
        parse_uint(first + 1, second, &mask) != 0 ||
        parse_uint(second + 1, second + strlen(second), &reads) != 0)
        return -1;
    gpus[gpu].transient_mask = mask;
    gpus[gpu].transient_reads = (unsigned int)reads;
    return 0;
}

/* slowdown=I:KIND:PCT; the lock is held. */
static int apply_slowdown(const char *value) {
    const char *first = strchr(value, ':');
    const char *second = first ? strchr(first + 1, ':') : NULL;
    unsigned int gpu;
    unsigned long long pct;
    if (second == NULL || parse_gpu(value, first, &gpu) != 0 ||
        parse_uint(second + 1, second + strlen(second), &pct) != 0 || pct > 100)
        return -1;
    size_t kind_len = (size_t)(second - first - 1);
    int kind = kind_len == 9 && strncmp(first + 1, "hwthermal", 9) == 0    ? 0
               : kind_len == 10 && strncmp(first + 1, "powerbrake", 10) == 0 ? 1
                                                                             : -1;
    if (kind < 0) return -1;
    gpus[gpu].slowdown_pct[kind] = (unsigned int)pct;
    gpus[gpu].slowdown_since = now_ms();
    return 0;
}

/* Splits "A:B:C..." into at most `max` parts (the separators replaced in `copy`); the count. */
static unsigned int split_colons(char *copy, char **parts, unsigned int max) {
    unsigned int n = 0;
    char *save = NULL;
    for (char *p = strtok_r(copy, ":", &save); p && n < max; p = strtok_r(NULL, ":", &save))
        parts[n++] = p;
    return strtok_r(NULL, ":", &save) == NULL ? n : max + 1;
}

static int parse_part(const char *part, unsigned long long *out) {
    return parse_uint(part, part + strlen(part), out);
}

/* The index of an nvmlNvLinkErrorCounter_t name, or -1. */
static int nvlink_counter(const char *name) {
    static const char *const names[NVLINK_COUNTERS] = {"replay", "recovery", "crc_flit", "crc_data"};
    for (unsigned int i = 0; i < NVLINK_COUNTERS; i++)
        if (strcmp(name, names[i]) == 0) return (int)i;
    return -1;
}

/* nvlinks=, linkdown=, nvlinkerr=, fabric=, fabricversion=; the lock is held. Returns 0, -1 for a
 * bad item, 1 for a key that is not one of these. */
static int apply_nvlink_item(const char *key, const char *value) {
    char copy[128];
    char *parts[4];
    unsigned long long a, b, c;
    unsigned int gpu, n;
    if (strlen(value) >= sizeof copy) return -1;
    snprintf(copy, sizeof copy, "%s", value);
    n = split_colons(copy, parts, 4);
    if (strcmp(key, "nvlinks") == 0) {
        if (n != 1 || parse_part(parts[0], &a) != 0 || a > MAX_NVLINKS) return -1;
        for (unsigned int i = 0; i < MAX_GPUS; i++) gpus[i].nvlinks = (unsigned int)a;
    } else if (strcmp(key, "fabricversion") == 0) {
        if (n != 1 || parse_part(parts[0], &a) != 0 || a < 2 || a > 3) return -1;
        fabric_version_max = (unsigned int)a;
    } else if (strcmp(key, "linkdown") == 0 || strcmp(key, "nvlinkerr") == 0 ||
               strcmp(key, "fabric") == 0) {
        int err = key[0] == 'n', fabric = key[0] == 'f';
        unsigned int want = err ? 4 : fabric ? 3 : 2;
        if (n != want || parse_gpu(parts[0], parts[0] + strlen(parts[0]), &gpu) != 0) return -1;
        if (parse_part(parts[1], &a) != 0) return -1;
        if (fabric) {
            if (parse_part(parts[2], &b) != 0 || a > 3) return -1;
            gpus[gpu].fabric_state = (unsigned char)a;
            gpus[gpu].fabric_status = (nvmlReturn_t)b;
            return 0;
        }
        if (a >= MAX_NVLINKS) return -1;
        if (!err) {
            gpus[gpu].link_down[a] = 1;
            return 0;
        }
        int counter = nvlink_counter(parts[2]);
        if (counter < 0 || parse_part(parts[3], &c) != 0) return -1;
        gpus[gpu].nvlink_error_step[a][counter] = c;
    } else {
        return 1;
    }
    return 0;
}

/* One key=value item of a scenario; the lock is held. Returns 0, or -1 for a bad item. */
static int apply_item(const char *key, const char *value) {
    const char *vend = value + strlen(value);
    unsigned int gpu;
    unsigned long long n;

    if (strcmp(key, "gpus") == 0) {
        if (parse_uint(value, vend, &n) != 0 || n > MAX_GPUS) return -1;
        gpu_count = (unsigned int)n;
    } else if (strcmp(key, "name") == 0) {
        if (*value == '\0' || strlen(value) >= sizeof gpus[0].name) return -1;
        for (unsigned int i = 0; i < MAX_GPUS; i++)
            snprintf(gpus[i].name, sizeof gpus[i].name, "%s", value);
    } else if (strcmp(key, "powerbrake") == 0 || strcmp(key, "thermal") == 0 ||
               strcmp(key, "swpowercap") == 0) {
        if (parse_gpu(value, vend, &gpu) != 0) return -1;
        unsigned long long bits = key[0] == 'p'   ? REASON_HW_POWER_BRAKE | REASON_HW_SLOWDOWN
                                  : key[0] == 't' ? REASON_HW_THERMAL | REASON_HW_SLOWDOWN
                                                  : REASON_SW_POWER_CAP;
        /* a throttled GPU is not reported idle */
        gpus[gpu].reasons = (gpus[gpu].reasons & ~REASON_GPU_IDLE) | bits;
    } else if (strcmp(key, "hwslowdown") == 0) {
        if (parse_gpu(value, vend, &gpu) != 0) return -1;
        gpus[gpu].reasons = REASON_HW_SLOWDOWN;
    } else if (strcmp(key, "transient") == 0) {
        return apply_transient(value);
    } else if (strcmp(key, "slowdown") == 0) {
        return apply_slowdown(value);
    } else if (strcmp(key, "nofields") == 0) {
        if (parse_uint(value, vend, &n) != 0) return -1;
        no_fields = n != 0;
    } else if (strcmp(key, "driver") == 0) {
        if (*value == '\0' || strlen(value) >= sizeof driver_version) return -1;
        snprintf(driver_version, sizeof driver_version, "%s", value);
    } else if (strcmp(key, "pending") == 0) {
        if (parse_gpu(value, vend, &gpu) != 0) return -1;
        gpus[gpu].remap_pending = 1;
    } else if (strcmp(key, "remapfail") == 0) {
        if (parse_gpu(value, vend, &gpu) != 0) return -1;
        gpus[gpu].remap_failure = 1;
    } else if (strcmp(key, "uncorrectable") == 0) {
        if (parse_gpu_number(value, &gpu, &n) != 0) return -1;
        gpus[gpu].unc_rows = (unsigned int)n;
    } else if (strcmp(key, "dbe") == 0) {
        if (parse_gpu_number(value, &gpu, &n) != 0) return -1;
        gpus[gpu].dbe_volatile = n;
        if (gpus[gpu].dbe_aggregate < n) gpus[gpu].dbe_aggregate = n;
    } else if (strcmp(key, "retirepending") == 0) {
        if (parse_gpu(value, vend, &gpu) != 0) return -1;
        gpus[gpu].retire_supported = 1;
        gpus[gpu].retire_pending = 1;
    } else if (strcmp(key, "noecc") == 0) {
        if (parse_gpu(value, vend, &gpu) != 0) return -1;
        gpus[gpu].ecc_enabled = 0;
    } else if (strcmp(key, "link") == 0) {
        /* I:GxW — the current generation and width; the maximum stays Gen5 x16 */
        const char *colon = strchr(value, ':');
        const char *x = colon ? strchr(colon, 'x') : NULL;
        unsigned long long g, w;
        if (colon == NULL || x == NULL || parse_gpu(value, colon, &gpu) != 0 ||
            parse_uint(colon + 1, x, &g) != 0 || parse_uint(x + 1, vend, &w) != 0)
            return -1;
        gpus[gpu].cur_gen = (unsigned int)g;
        gpus[gpu].cur_width = (unsigned int)w;
    } else if (strcmp(key, "procs") == 0) {
        if (parse_gpu_number(value, &gpu, &n) != 0) return -1;
        gpus[gpu].procs = (unsigned int)n;
    } else if (strcmp(key, "numa") == 0) {
        if (parse_gpu_number(value, &gpu, &n) != 0 || n >= 64) return -1;
        gpus[gpu].numa_node = (unsigned int)n;
    } else if (strcmp(key, "mig") == 0) {
        if (parse_gpu(value, vend, &gpu) != 0) return -1;
        gpus[gpu].mig_enabled = 1;
    } else if (strcmp(key, "xid") == 0) {
        /* I:CODE[,I:CODE...] */
        char list[256];
        if (strlen(value) >= sizeof list) return -1;
        snprintf(list, sizeof list, "%s", value);
        char *save = NULL;
        for (char *one = strtok_r(list, ",", &save); one; one = strtok_r(NULL, ",", &save)) {
            if (parse_gpu_number(one, &gpu, &n) != 0) return -1;
            if (push_event_locked(gpu, EVENT_XID_CRITICAL, n) != 0) return -1;
        }
    } else if (strcmp(key, "xidafter") == 0) {
        /* I:CODE:MS: one XID delivered MS milliseconds after the scenario is applied */
        const char *last = strrchr(value, ':');
        unsigned long long ms = 0;
        char head[64];
        if (last == NULL || (size_t)(last - value) >= sizeof head) return -1;
        snprintf(head, sizeof head, "%.*s", (int)(last - value), value);
        if (parse_uint(last + 1, vend, &ms) != 0) return -1;
        if (parse_gpu_number(head, &gpu, &n) != 0) return -1;
        if (push_event_at_locked(gpu, EVENT_XID_CRITICAL, n, now_ms() + ms) != 0) return -1;
    } else if (strcmp(key, "registerfail") == 0) {
        if (parse_gpu_number(value, &gpu, &n) != 0) return -1;
        gpus[gpu].register_fail = (nvmlReturn_t)n;
    } else if (strcmp(key, "aggdbe") == 0) {
        if (parse_gpu_number(value, &gpu, &n) != 0) return -1;
        gpus[gpu].dbe_aggregate = n;
    } else if (strcmp(key, "failnext") == 0) {
        return apply_failnext(value);
    } else if (strcmp(key, "hang") == 0 || strcmp(key, "fail") == 0) {
        /* FUNCTION:MS or FUNCTION:CODE */
        const char *colon = strrchr(value, ':');
        char fn[FN_LEN];
        if (colon == NULL || (size_t)(colon - value) >= FN_LEN) return -1;
        if (parse_uint(colon + 1, vend, &n) != 0) return -1;
        memcpy(fn, value, (size_t)(colon - value));
        fn[colon - value] = '\0';
        if (key[0] == 'f')
            return n == 0 ? -1 : set_rule(failing, &failing_count, fn, (unsigned int)n);
        return set_rule(hangs, &hang_count, fn, (unsigned int)n);
    } else if (strcmp(key, "initfail") == 0) {
        if (parse_uint(value, vend, &n) != 0 || n == 0) return -1;
        init_fail = (nvmlReturn_t)n;
    } else if (strcmp(key, "nodevices") == 0) {
        if (parse_uint(value, vend, &n) != 0) return -1;
        if (n != 0) gpu_count = 0;
    } else if (strcmp(key, "notsupported") == 0) {
        return set_rule(unsupported, &unsupported_count, value, 0);
    } else {
        int nvlink = apply_nvlink_item(key, value);
        return nvlink == 1 ? -1 : nvlink;
    }
    return 0;
}

static char *trim(char *s) {
    while (*s == ' ' || *s == '\t' || *s == '\n') s++;
    char *end = s + strlen(s);
    while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\n')) *--end = '\0';
    return s;
}

/* Applies a whole scenario; the lock is held. Returns 0, or -1 when an item was bad (the others
 * still apply), with a line on stderr naming it. */
static int apply_locked(const char *scenario) {
    if (scenario == NULL) return 0;
    char *copy = strdup(scenario);
    if (copy == NULL) return -1;
    int status = 0;
    char *save = NULL;
    for (char *item = strtok_r(copy, ";", &save); item; item = strtok_r(NULL, ";", &save)) {
        item = trim(item);
        if (*item == '\0') continue;
        char *eq = strchr(item, '=');
        if (eq == NULL) {
            fprintf(stderr, "fake-nvml: bad scenario item '%s' (no '=')\n", item);
            status = -1;
            continue;
        }
        *eq = '\0';
        if (apply_item(trim(item), trim(eq + 1)) != 0) {
            fprintf(stderr, "fake-nvml: bad scenario item '%s=%s'\n", item, eq + 1);
            status = -1;
        }
    }
    free(copy);
    return status;
}

/* ---- test controls -------------------------------------------------------------------------- */

API void fakenvml_reset(void) {
    pthread_mutex_lock(&lock);
    reset_locked();
    pthread_mutex_unlock(&lock);
}

API int fakenvml_apply(const char *scenario) {
    pthread_mutex_lock(&lock);
    int status = apply_locked(scenario);
    pthread_mutex_unlock(&lock);
    return status;
}

API int fakenvml_push_xid(unsigned int gpu, unsigned long long xid) {
    pthread_mutex_lock(&lock);
    int status = push_event_locked(gpu, EVENT_XID_CRITICAL, xid);
    pthread_mutex_unlock(&lock);
    return status;
}

API unsigned long fakenvml_calls(const char *fn) {
    unsigned long calls = 0;
    pthread_mutex_lock(&lock);
    for (unsigned int i = 0; i < counter_count; i++)
        if (fn != NULL && strcmp(counters[i].fn, fn) == 0) calls = counters[i].calls;
    pthread_mutex_unlock(&lock);
    return calls;
}

/* ---- NVML ------------------------------------------------------------------------------------ */

API const char *nvmlErrorString(nvmlReturn_t result) {
    switch (result) {
        case 0: return "Success";
        case 1: return "Uninitialized";
        case 2: return "Invalid Argument";
        case 3: return "Not Supported";
        case 4: return "Insufficient Permissions";
        case 5: return "Already Initialized";
        case 6: return "Not Found";
        case 7: return "Insufficient Size";
        case 8: return "Insufficient External Power";
        case 9: return "Driver Not Loaded";
        case 10: return "Timeout";
        case 11: return "Interrupt Request Issue";
        case 12: return "NVML Shared Library Not Found";
        case 13: return "Function Not Found";
        case 14: return "Corrupted infoROM";
        case 15: return "GPU is lost";
        case 16: return "GPU requires reset";
        case 17: return "GPU access blocked by the operating system";
        case 18: return "Driver/library version mismatch";
        case 19: return "In use by another client";
        case 20: return "Insufficient Memory";
        case 21: return "No data";
        case 22: return "The requested vgpu operation is not available on target device, becasue ECC is enabled";
        case 23: return "Insufficient Resources";
        case 24: return "Frequency not supported";
        case 25: return "Argument version mismatch";
        case 26: return "Deprecated";
        case 27: return "Not Ready";
        case 28: return "GPU not found";
        case 29: return "Invalid state";
        case 999: return "Unknown Error";
        default: return "Unknown Error";
    }
}

API nvmlReturn_t nvmlInit_v2(void) {
    nvmlReturn_t entered = enter(__func__, 0);
    if (entered != NVML_SUCCESS) return entered;
    pthread_mutex_lock(&lock);
    if (!env_applied) {
        env_applied = 1;
        apply_locked(getenv("FAKE_NVML_SCENARIO"));
    }
    nvmlReturn_t result = init_fail;
    if (result == NVML_SUCCESS) init_count++;
    pthread_mutex_unlock(&lock);
    return result;
}

API nvmlReturn_t nvmlShutdown(void) {
    ENTER();
    pthread_mutex_lock(&lock);
    if (init_count > 0) init_count--;
    pthread_mutex_unlock(&lock);
    return NVML_SUCCESS;
}

static nvmlReturn_t copy_string(char *out, unsigned int length, const char *value) {
    if (out == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(value) + 1 > length) return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(out, value, strlen(value) + 1);
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    ENTER();
    pthread_mutex_lock(&lock);
    nvmlReturn_t result = copy_string(version, length, driver_version);
    pthread_mutex_unlock(&lock);
    return result;
}

API nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *deviceCount) {
    ENTER();
    if (deviceCount == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    pthread_mutex_lock(&lock);
    *deviceCount = gpu_count;
    pthread_mutex_unlock(&lock);
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    ENTER();
    if (device == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    pthread_mutex_lock(&lock);
    nvmlReturn_t result = index < gpu_count ? NVML_SUCCESS : NVML_ERROR_INVALID_ARGUMENT;
    if (result == NVML_SUCCESS) *device = &gpus[index];
    pthread_mutex_unlock(&lock);
    return result;
}

/* Body of a per-GPU getter: takes the lock, resolves g, runs the block, unlocks, returns `result`. */
#define WITH_GPU(device, ...)                                 \
    ENTER();                                                  \
    nvmlReturn_t result = NVML_SUCCESS;                       \
    pthread_mutex_lock(&lock);                                \
    struct fake_gpu *g = gpu_locked(device);                  \
    if (g == NULL) {                                          \
        result = NVML_ERROR_INVALID_ARGUMENT;                 \
    } else {                                                  \
        __VA_ARGS__                                           \
    }                                                         \
    pthread_mutex_unlock(&lock);                              \
    return result;

API nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t device, unsigned int *index) {
    WITH_GPU(device, {
        if (index == NULL) result = NVML_ERROR_INVALID_ARGUMENT;
        else *index = (unsigned int)(g - gpus);
    })
}

API nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
    WITH_GPU(device, { result = copy_string(name, length, g->name); })
}

API nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length) {
    WITH_GPU(device, { result = copy_string(uuid, length, g->uuid); })
}

/* Consumer GPUs answer NOT_SUPPORTED (no inforom): notsupported=nvmlDeviceGetSerial. */
API nvmlReturn_t nvmlDeviceGetSerial(nvmlDevice_t device, char *serial, unsigned int length) {
    WITH_GPU(device, { result = copy_string(serial, length, g->serial); })
}

API nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, nvmlPciInfo_t *pci) {
    WITH_GPU(device, {
        if (pci == NULL) {
            result = NVML_ERROR_INVALID_ARGUMENT;
        } else {
            memset(pci, 0, sizeof *pci);
            pci->domain = 0;
            pci->bus = g->bus;
            pci->device = 0;
            pci->pciDeviceId = 0x233510de;    /* H200 */
            pci->pciSubSystemId = 0x18bf10de; /* from the H200 capture */
            snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "%04X:%02X:%02X.0", pci->domain,
                     pci->bus, pci->device);
            snprintf(pci->busId, sizeof pci->busId, "%08X:%02X:%02X.0", pci->domain, pci->bus,
                     pci->device);
        }
    })
}

#define UINT_GETTER(fn, expr)                                                   \
    API nvmlReturn_t fn(nvmlDevice_t device, unsigned int *out) {               \
        WITH_GPU(device, {                                                      \
            if (out == NULL) result = NVML_ERROR_INVALID_ARGUMENT;              \
            else *out = (expr);                                                 \
        })                                                                      \
    }

UINT_GETTER(nvmlDeviceGetCurrPcieLinkGeneration, g->cur_gen)
UINT_GETTER(nvmlDeviceGetCurrPcieLinkWidth, g->cur_width)
UINT_GETTER(nvmlDeviceGetMaxPcieLinkGeneration, g->max_gen)
UINT_GETTER(nvmlDeviceGetMaxPcieLinkWidth, g->max_width)
UINT_GETTER(nvmlDeviceGetGpuMaxPcieLinkGeneration, g->max_gen)

API nvmlReturn_t nvmlDeviceGetRemappedRows(nvmlDevice_t device, unsigned int *corrRows,
                                           unsigned int *uncRows, unsigned int *isPending,
                                           unsigned int *failureOccurred) {
    WITH_GPU(device, {
        if (!corrRows || !uncRows || !isPending || !failureOccurred) {
            result = NVML_ERROR_INVALID_ARGUMENT;
        } else if (g->mig_enabled) {
            result = NVML_ERROR_NOT_SUPPORTED; /* nvml.h: NOT_SUPPORTED "if MIG is enabled" */
        } else {
            *corrRows = g->corr_rows;
            *uncRows = g->unc_rows;
            *isPending = g->remap_pending;
            *failureOccurred = g->remap_failure;
        }
    })
}

static nvmlReturn_t clock_reasons(nvmlDevice_t device, unsigned long long *reasons) {
    nvmlReturn_t result = NVML_SUCCESS;
    pthread_mutex_lock(&lock);
    struct fake_gpu *g = gpu_locked(device);
    if (g == NULL || reasons == NULL) {
        result = NVML_ERROR_INVALID_ARGUMENT;
    } else if (g->transient_reads > 0) {
        g->transient_reads--;
        *reasons = g->transient_mask;
    } else {
        *reasons = g->reasons;
    }
    pthread_mutex_unlock(&lock);
    return result;
}

#ifndef FAKE_OLD_DRIVER
API nvmlReturn_t nvmlDeviceGetCurrentClocksEventReasons(nvmlDevice_t device,
                                                        unsigned long long *clocksEventReasons) {
    ENTER();
    return clock_reasons(device, clocksEventReasons);
}
#endif

API nvmlReturn_t nvmlDeviceGetCurrentClocksThrottleReasons(nvmlDevice_t device,
                                                           unsigned long long *clocksThrottleReasons) {
    ENTER();
    return clock_reasons(device, clocksThrottleReasons);
}

/* The accumulated duration, in ns, of slowdown KIND (0 HW thermal, 1 power brake); lock held. */
static unsigned long long slowdown_ns_locked(const struct fake_gpu *g, int kind) {
    if (g->slowdown_pct[kind] == 0) return 0;
    return (now_ms() - g->slowdown_since) * 1000000ull * g->slowdown_pct[kind] / 100ull;
}

/* The nvmlNvLinkErrorCounter_t whose total a field id is (38 CRC flit, 45 CRC data, 52 replay,
 * 59 recovery), or -1. */
static int nvlink_total_counter(unsigned int field) {
    switch (field) {
        case 38: return 2;
        case 45: return 3;
        case 52: return 0;
        case 59: return 1;
        default: return -1;
    }
}

/* Grows the counter of every link by its step, and answers the GPU's total; the lock is held. */
static unsigned long long nvlink_total_locked(struct fake_gpu *g, int counter) {
    unsigned long long total = 0;
    for (unsigned int link = 0; link < g->nvlinks; link++) {
        g->nvlink_errors[link][counter] += g->nvlink_error_step[link][counter];
        total += g->nvlink_errors[link][counter];
    }
    return total;
}

/* Which slowdown a field id names under this driver's numbering: 0 HW thermal, 1 power brake,
 * 2 SW thermal (always 0 here), -1 none; the lock is held. */
static int slowdown_kind_locked(unsigned int field) {
    unsigned int base = atoi(driver_version) >= 590 ? 269u : 251u;
    if (field == base) return 2;
    if (field == base + 1) return 0;
    if (field == base + 2) return 1;
    return -1;
}

API nvmlReturn_t nvmlDeviceGetFieldValues(nvmlDevice_t device, int valuesCount,
                                          nvmlFieldValue_t *values) {
    WITH_GPU(device, {
        if (values == NULL || valuesCount < 0) {
            result = NVML_ERROR_INVALID_ARGUMENT;
        } else {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            for (int i = 0; i < valuesCount; i++) {
                nvmlFieldValue_t *v = &values[i];
                int total = nvlink_total_counter(v->fieldId);
                if (v->fieldId == FIELD_NVLINK_LINK_COUNT || total >= 0) {
                    v->timestamp = (long long)ts.tv_sec * 1000000ll + ts.tv_nsec / 1000;
                    v->latencyUsec = 0;
                    v->nvmlReturn = no_fields || g->nvlinks == 0 ? NVML_ERROR_NOT_SUPPORTED
                                                                 : NVML_SUCCESS;
                    /* NVML_VALUE_TYPE_UNSIGNED_INT for the count, _UNSIGNED_LONG_LONG for totals */
                    v->valueType = total < 0 ? 1 : 3;
                    v->value = v->nvmlReturn != NVML_SUCCESS ? 0
                               : total < 0               ? g->nvlinks
                                                         : nvlink_total_locked(g, total);
                    continue;
                }
                int kind = no_fields ? -1 : slowdown_kind_locked(v->fieldId);
                v->timestamp = (long long)ts.tv_sec * 1000000ll + ts.tv_nsec / 1000;
                v->latencyUsec = 0;
                v->nvmlReturn = kind < 0 ? NVML_ERROR_NOT_SUPPORTED : NVML_SUCCESS;
                v->valueType = 3; /* NVML_VALUE_TYPE_UNSIGNED_LONG_LONG */
                v->value = kind < 0 || kind == 2 ? 0 : slowdown_ns_locked(g, kind);
            }
        }
    })
}

API nvmlReturn_t nvmlDeviceGetEccMode(nvmlDevice_t device, int *current, int *pending) {
    WITH_GPU(device, {
        if (current == NULL || pending == NULL) {
            result = NVML_ERROR_INVALID_ARGUMENT;
        } else {
            *current = g->ecc_enabled;
            *pending = g->ecc_enabled;
        }
    })
}

API nvmlReturn_t nvmlDeviceGetTotalEccErrors(nvmlDevice_t device, int errorType, int counterType,
                                             unsigned long long *eccCounts) {
    WITH_GPU(device, {
        if (eccCounts == NULL || errorType < 0 || errorType > 1 || counterType < 0 ||
            counterType > 1) {
            result = NVML_ERROR_INVALID_ARGUMENT;
        } else if (!g->ecc_enabled) {
            result = NVML_ERROR_NOT_SUPPORTED; /* needs ECC on */
        } else if (errorType == 0) {
            *eccCounts = 0; /* corrected */
        } else {
            *eccCounts = counterType == 0 ? g->dbe_volatile : g->dbe_aggregate;
        }
    })
}

API nvmlReturn_t nvmlDeviceGetRetiredPagesPendingStatus(nvmlDevice_t device, int *isPending) {
    WITH_GPU(device, {
        if (isPending == NULL) result = NVML_ERROR_INVALID_ARGUMENT;
        else if (!g->retire_supported) result = NVML_ERROR_NOT_SUPPORTED;
        else *isPending = g->retire_pending;
    })
}

/* The size query and the list, as _v2 and _v3 both answer them (the 24-byte struct is the same). */
static nvmlReturn_t compute_processes(nvmlDevice_t device, unsigned int *infoCount,
                                      nvmlProcessInfo_t *infos) {
    nvmlReturn_t result = NVML_SUCCESS;
    pthread_mutex_lock(&lock);
    struct fake_gpu *g = gpu_locked(device);
    if (g == NULL || infoCount == NULL) {
        result = NVML_ERROR_INVALID_ARGUMENT;
    } else if (g->mig_enabled) {
        result = NVML_ERROR_NO_PERMISSION;
    } else if (*infoCount < g->procs) {
        *infoCount = g->procs;
        result = NVML_ERROR_INSUFFICIENT_SIZE;
    } else if (g->procs > 0 && infos == NULL) {
        result = NVML_ERROR_INVALID_ARGUMENT;
    } else {
        for (unsigned int i = 0; i < g->procs; i++) {
            infos[i].pid = 4100 + (unsigned int)(g - gpus) * 100 + i;
            infos[i].usedGpuMemory = 1ull << 30;
            infos[i].gpuInstanceId = 0xffffffffu;
            infos[i].computeInstanceId = 0xffffffffu;
        }
        *infoCount = g->procs;
    }
    pthread_mutex_unlock(&lock);
    return result;
}

#ifndef FAKE_OLD_DRIVER
API nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t device,
                                                         unsigned int *infoCount,
                                                         nvmlProcessInfo_t *infos) {
    ENTER();
    return compute_processes(device, infoCount, infos);
}
#endif

API nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v2(nvmlDevice_t device,
                                                         unsigned int *infoCount,
                                                         nvmlProcessInfo_t *infos) {
    ENTER();
    return compute_processes(device, infoCount, infos);
}

/* nodeSet: 64 nodes per unsigned long (LP64). Scope NODE and SOCKET answer alike here. */
API nvmlReturn_t nvmlDeviceGetMemoryAffinity(nvmlDevice_t device, unsigned int nodeSetSize,
                                             unsigned long *nodeSet, unsigned int scope) {
    WITH_GPU(device, {
        if (nodeSetSize == 0 || nodeSet == NULL || scope > 1) {
            result = NVML_ERROR_INVALID_ARGUMENT;
        } else {
            memset(nodeSet, 0, nodeSetSize * sizeof *nodeSet);
            if (g->numa_node / 64 < nodeSetSize)
                nodeSet[g->numa_node / 64] = 1ul << (g->numa_node % 64);
        }
    })
}

#ifndef FAKE_OLD_DRIVER
API nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t device, unsigned int *currentMode,
                                      unsigned int *pendingMode) {
    WITH_GPU(device, {
        if (currentMode == NULL || pendingMode == NULL) {
            result = NVML_ERROR_INVALID_ARGUMENT;
        } else {
            *currentMode = (unsigned int)g->mig_enabled;
            *pendingMode = (unsigned int)g->mig_enabled;
        }
    })
}
#endif

/* NVML_FEATURE_ENABLED (1) when the link is active. */
API nvmlReturn_t nvmlDeviceGetNvLinkState(nvmlDevice_t device, unsigned int link, int *isActive) {
    WITH_GPU(device, {
        if (g->nvlinks == 0) result = NVML_ERROR_NOT_SUPPORTED;
        else if (isActive == NULL || link >= g->nvlinks) result = NVML_ERROR_INVALID_ARGUMENT;
        else *isActive = g->link_down[link] ? 0 : 1;
    })
}

API nvmlReturn_t nvmlDeviceGetNvLinkErrorCounter(nvmlDevice_t device, unsigned int link,
                                                 int counter, unsigned long long *counterValue) {
    WITH_GPU(device, {
        if (g->nvlinks == 0) {
            result = NVML_ERROR_NOT_SUPPORTED;
        } else if (counterValue == NULL || link >= g->nvlinks || counter < 0 || counter > 4) {
            result = NVML_ERROR_INVALID_ARGUMENT;
        } else if (counter == 4) {
            result = NVML_ERROR_NOT_SUPPORTED; /* NVML_NVLINK_ERROR_DL_ECC_DATA */
        } else {
            if (no_fields) g->nvlink_errors[link][counter] += g->nvlink_error_step[link][counter];
            *counterValue = g->nvlink_errors[link][counter];
        }
    })
}

#ifndef FAKE_OLD_DRIVER
/* The fake's cluster UUID: the same for every GPU of the node, as one NVSwitch fabric. */
static void fabric_uuid(unsigned char *uuid) {
    for (unsigned int i = 0; i < 16; i++) uuid[i] = (unsigned char)(0xa0 + i);
}

API nvmlReturn_t nvmlDeviceGetGpuFabricInfo(nvmlDevice_t device, nvmlGpuFabricInfo_t *info) {
    WITH_GPU(device, {
        if (info == NULL) {
            result = NVML_ERROR_INVALID_ARGUMENT;
        } else if (g->nvlinks == 0) {
            result = NVML_ERROR_NOT_SUPPORTED;
        } else {
            memset(info, 0, sizeof *info);
            fabric_uuid(info->clusterUuid);
            info->status = g->fabric_status;
            info->cliqueId = 1;
            info->state = g->fabric_state;
        }
    })
}

/* Fills v2 or v3 by the version the caller set, as nvml.h's versioned functions do. */
API nvmlReturn_t nvmlDeviceGetGpuFabricInfoV(nvmlDevice_t device, nvmlGpuFabricInfo_v3_t *info) {
    WITH_GPU(device, {
        unsigned int version = info == NULL ? 0 : info->version;
        int v3 = version == FABRIC_INFO_V3 && fabric_version_max >= 3;
        if (info == NULL) {
            result = NVML_ERROR_INVALID_ARGUMENT;
        } else if (!v3 && version != FABRIC_INFO_V2) {
            result = NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
        } else if (g->nvlinks == 0) {
            result = NVML_ERROR_NOT_SUPPORTED;
        } else {
            memset(info, 0, v3 ? sizeof(nvmlGpuFabricInfo_v3_t) : sizeof(nvmlGpuFabricInfo_v2_t));
            info->version = version;
            fabric_uuid(info->clusterUuid);
            info->status = g->fabric_status;
            info->cliqueId = 1;
            info->state = g->fabric_state;
            info->healthMask = 0;
            if (v3) info->healthSummary = FABRIC_HEALTH_SUMMARY_HEALTHY;
        }
    })
}
#endif

API nvmlReturn_t nvmlDeviceGetSupportedEventTypes(nvmlDevice_t device,
                                                  unsigned long long *eventTypes) {
    WITH_GPU(device, {
        if (eventTypes == NULL) result = NVML_ERROR_INVALID_ARGUMENT;
        else *eventTypes = SUPPORTED_EVENTS;
    })
}

/* The live set behind a handle, or NULL; call with the lock held. */
static struct fake_event_set *set_locked(nvmlEventSet_t set) {
    uintptr_t p = (uintptr_t)set, base = (uintptr_t)sets;
    if (p < base || p >= base + sizeof sets) return NULL;
    if ((p - base) % sizeof(struct fake_event_set) != 0) return NULL;
    return set->live ? set : NULL;
}

API nvmlReturn_t nvmlEventSetCreate(nvmlEventSet_t *set) {
    ENTER();
    if (set == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    nvmlReturn_t result = NVML_ERROR_UNKNOWN;
    pthread_mutex_lock(&lock);
    for (unsigned int i = 0; i < MAX_SETS; i++) {
        if (!sets[i].live) {
            memset(&sets[i], 0, sizeof sets[i]);
            sets[i].live = 1;
            *set = &sets[i];
            result = NVML_SUCCESS;
            break;
        }
    }
    pthread_mutex_unlock(&lock);
    return result;
}

API nvmlReturn_t nvmlDeviceRegisterEvents(nvmlDevice_t device, unsigned long long eventTypes,
                                          nvmlEventSet_t set) {
    WITH_GPU(device, {
        struct fake_event_set *s = set_locked(set);
        if (s == NULL) result = NVML_ERROR_INVALID_ARGUMENT;
        else if (g->register_fail != NVML_SUCCESS) result = g->register_fail;
        else if ((eventTypes & ~SUPPORTED_EVENTS) != 0) result = NVML_ERROR_NOT_SUPPORTED;
        else s->mask[g - gpus] |= eventTypes;
    })
}

API nvmlReturn_t nvmlEventSetWait_v2(nvmlEventSet_t set, nvmlEventData_t *data,
                                     unsigned int timeoutms) {
    ENTER();
    if (data == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned long long deadline = now_ms() + timeoutms;
    for (;;) {
        nvmlReturn_t result = NVML_ERROR_TIMEOUT;
        pthread_mutex_lock(&lock);
        struct fake_event_set *s = set_locked(set);
        if (s == NULL) {
            result = NVML_ERROR_INVALID_ARGUMENT;
        } else {
            for (unsigned int i = 0; i < event_count; i++) {
                struct fake_event *e = &events[i];
                if (e->gpu >= gpu_count || (s->mask[e->gpu] & e->type) == 0) continue;
                if (e->due > now_ms()) continue;
                data->device = &gpus[e->gpu];
                data->eventType = e->type;
                data->eventData = e->data;
                data->gpuInstanceId = 0xffffffffu;
                data->computeInstanceId = 0xffffffffu;
                memmove(&events[i], &events[i + 1], (event_count - i - 1) * sizeof events[0]);
                event_count--;
                result = NVML_SUCCESS;
                break;
            }
        }
        pthread_mutex_unlock(&lock);
        if (result != NVML_ERROR_TIMEOUT) return result;
        unsigned long long now = now_ms();
        if (now >= deadline) return NVML_ERROR_TIMEOUT;
        unsigned long long left = deadline - now;
        sleep_ms(left < 5 ? (unsigned int)left : 5);
    }
}

API nvmlReturn_t nvmlEventSetFree(nvmlEventSet_t set) {
    ENTER();
    nvmlReturn_t result = NVML_SUCCESS;
    pthread_mutex_lock(&lock);
    struct fake_event_set *s = set_locked(set);
    if (s == NULL) result = NVML_ERROR_INVALID_ARGUMENT;
    else s->live = 0;
    pthread_mutex_unlock(&lock);
    return result;
}
