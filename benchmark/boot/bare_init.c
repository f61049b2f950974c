/* The bare side of boxlite_boot_bench: run as rdinit= from the same initramfs our engine boots,
 * it prints a marker with the guest's boot time (CLOCK_BOOTTIME, ms) on the console and powers
 * off — the kernel's own boot to init, without our agent. */
#include <fcntl.h>
#include <stdio.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int main(void) {
    struct timespec now;
    char line[96];
    int fd = open("/dev/console", O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        mkdir("/dev", 0755);
        mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
        fd = open("/dev/console", O_WRONLY | O_CLOEXEC);
    }
    clock_gettime(CLOCK_BOOTTIME, &now);
    const int n = snprintf(line, sizeof line, "BARE-INIT-READY %lld ms\n",
                           (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000);
    if (fd >= 0 && n > 0) (void)!write(fd, line, (size_t)n);
    reboot(RB_POWER_OFF);
    return 0;
}
