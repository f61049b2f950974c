/* Runs inside the benchmark guest (static, PID 1's child): block I/O on /dev/vda with O_DIRECT,
 * timed with the guest's monotonic clock, one line of results on stdout. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { kSpan = 64 << 20, kBig = 1 << 20, kSmall = 4096, kSmallOps = 2048 };

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint32_t next_random(uint32_t* state) {
    *state ^= *state << 13;
    *state ^= *state >> 17;
    *state ^= *state << 5;
    return *state;
}

int main(void) {
    int fd = open("/dev/vda", O_RDWR | O_DIRECT);
    if (fd < 0) {
        perror("open /dev/vda");
        return 1;
    }
    void* buffer;
    if (posix_memalign(&buffer, 4096, kBig) != 0) return 1;
    memset(buffer, 0x5a, kBig);
    uint64_t t0 = now_ns();
    for (long off = 0; off < kSpan; off += kBig)
        if (pwrite(fd, buffer, kBig, off) != kBig) return perror("seq write"), 1;
    if (fdatasync(fd) != 0) return perror("fdatasync"), 1;
    uint64_t seq_write = now_ns() - t0;
    t0 = now_ns();
    for (long off = 0; off < kSpan; off += kBig)
        if (pread(fd, buffer, kBig, off) != kBig) return perror("seq read"), 1;
    uint64_t seq_read = now_ns() - t0;
    uint32_t state = 12345;
    t0 = now_ns();
    for (int i = 0; i < kSmallOps; ++i) {
        long off = (long)(next_random(&state) % (kSpan / kSmall)) * kSmall;
        if (pwrite(fd, buffer, kSmall, off) != kSmall) return perror("rand write"), 1;
    }
    if (fdatasync(fd) != 0) return perror("fdatasync"), 1;
    uint64_t rand_write = now_ns() - t0;
    t0 = now_ns();
    for (int i = 0; i < kSmallOps; ++i) {
        long off = (long)(next_random(&state) % (kSpan / kSmall)) * kSmall;
        if (pread(fd, buffer, kSmall, off) != kSmall) return perror("rand read"), 1;
    }
    uint64_t rand_read = now_ns() - t0;
    printf("BLKBENCH seq_write_1m=%llu seq_read_1m=%llu rand_write_4k=%llu rand_read_4k=%llu ops_1m=%d ops_4k=%d\n",
           (unsigned long long)seq_write, (unsigned long long)seq_read, (unsigned long long)rand_write,
           (unsigned long long)rand_read, kSpan / kBig, kSmallOps);
    fflush(stdout);
    return 0;
}
