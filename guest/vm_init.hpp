// The agent as PID 1 of a VM (kvm and qemu engines): what it does before it serves the protocol,
// and the power-off after. The protocol itself is the same Agent as on the namespace engine
// (agent.cpp); only the listening socket (AF_VSOCK instead of a Unix socket) and the set-up differ.
//
// Boot sequence (each step logs one "boxlite-agent: ..." line on the console, with the guest's
// uptime in ms):
//   1. mount devtmpfs on /dev, proc on /proc, sysfs on /sys;
//   2. read /boxlite/launch.json (lib/engine/kvm/launch.hpp; put in front of the initramfs by the
//      engine), keeping the defaults when it is missing;
//   3. load the vsock transport's modules (from /lib/modules/order, guest_assets.hpp) and listen
//      on AF_VSOCK (any CID) at the launch's port at once: the guest kernel queues the host's
//      connection while the boot goes on (the host counts the agent up when it answers the
//      protocol's hello, after step 5). Then the disk's modules, and the network's and the
//      volumes' only when the box has them (all before the root moves: they are initramfs files);
//   4. wait for the box disk /dev/vda, mount its ext4 on /newroot, grow it to the disk's size
//      (EXT4_IOC_RESIZE_FS, online), move /dev, /proc, /sys onto it and make it the root
//      (MS_MOVE + chroot: the initramfs cannot be pivot_root'ed away), then devpts and /dev/shm;
//   5. set the host name (the box's short id), bring up lo (and write /etc/hosts and
//      /etc/resolv.conf when the launch says network), apply the rlimits, build the base
//      environment (PATH, HOME, HOSTNAME, then the launch's), and return the listening socket to
//      serve ("listening on vsock port ...": the agent is ready).
// The network (its modules, then eth0 with the box network's addresses: net/box_interface.hpp)
// comes up on a thread of its own from step 3 on, while the disk is mounted and the agent starts
// serving; the agent runs no command before it is done (VmBoot::wait_for_network).
// Without a disk it logs so and serves from the initramfs.
#pragma once

#include <string>
#include <thread>
#include <vector>

namespace boxlite::guest {

struct VmBoot {
    int listen_fd = -1;
    std::vector<std::string> env;  ///< "KEY=VALUE", the commands' base environment
    std::string working_dir = "/";
    std::string user;
    bool power_off_when_ready = false;
    std::thread network;  ///< bringing eth0 up (when the box has a network), until joined

    /// Returns once the network set-up has ended (done, or failed and logged); at once without one.
    void wait_for_network();
};

/// Steps 1-5; on a failure that leaves nothing to serve, logs it and returns listen_fd -1.
VmBoot vm_boot();

/// Syncs and powers the VM off (reboot(RB_POWER_OFF)); never returns.
[[noreturn]] void vm_power_off();

/// The guest's uptime in milliseconds (CLOCK_BOOTTIME), for the boot log.
long long vm_uptime_ms();

}  // namespace boxlite::guest
