// Per-box cgroups: memory, CPU and pids limits wherever the host lets us set them.
//
// Hosts differ: a pure cgroup v2 host (one hierarchy at /sys/fs/cgroup with cgroup.controllers),
// a hybrid v1 host (one mount per controller, e.g. /sys/fs/cgroup/memory), or none writable
// (unprivileged, read-only /sys). `CgroupSet::create` tries what exists, applies each limit it
// can, and records which were applied and which were not (and why) instead of failing the box;
// `add` moves a limit back to "not applied" when the box's process cannot join its cgroup. The
// caller is told the truth either way (cgroup.info, shim.log).
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <fstream>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace boxlite::jailer {

struct CgroupLimits {
    std::optional<std::uint64_t> memory_bytes;
    std::optional<std::uint32_t> cpus;  ///< CFS quota of this many CPUs
    std::optional<std::uint64_t> pids;
};

class CgroupSet {
public:
    /// Creates boxlite/<name> in every hierarchy that has the controllers and applies `limits`.
    static CgroupSet create(const std::string& name, const CgroupLimits& limits) {
        CgroupSet set;
        const std::string root = "/sys/fs/cgroup";
        if (::access((root + "/cgroup.controllers").c_str(), F_OK) == 0) {
            set.create_v2(root, name, limits);
        } else {
            set.create_v1(root, name, limits);
        }
        return set;
    }

    /// Moves process `pid` into every created cgroup. A cgroup that refuses it (v2's "no internal
    /// processes" rule, a hierarchy gone read-only, …) is removed again, and the limits set there
    /// move from applied() to skipped() with the reason: the report must say what really binds the
    /// process. Returns false if any join failed.
    /// With `except_memory` (cgroup v1 only, where memory is a hierarchy of its own) the process
    /// stays out of the memory cgroup: the shim keeps the box's agent out of its box's OOM domain
    /// that way where it cannot make it -1000, and the agent moves each command in.
    bool add(int pid, bool except_memory = false) {
        bool all = true;
        for (std::size_t i = 0; i < dirs_.size();) {
            const auto dir = dirs_[i];
            if ((except_memory && !v2_ && dir == memory_dir_) || write(dir + "/cgroup.procs", std::to_string(pid))) {
                ++i;
                continue;
            }
            all = false;
            const std::string why = "joining " + dir + " failed: " + std::strerror(errno);
            bool moved = false;
            for (std::size_t a = 0; a < applied_.size();) {
                if (applied_dirs_[a] != dir) {
                    ++a;
                    continue;
                }
                skipped_.push_back(applied_[a] + " (" + why + ")");
                applied_.erase(applied_.begin() + static_cast<std::ptrdiff_t>(a));
                applied_dirs_.erase(applied_dirs_.begin() + static_cast<std::ptrdiff_t>(a));
                moved = true;
            }
            if (!moved) skipped_.push_back("accounting (" + why + ")");
            ::rmdir(dir.c_str());
            for (auto* member : {&memory_dir_, &cpu_dir_, &pids_dir_, &cpuacct_dir_, &bpf_dir_}) {
                if (*member == dir) member->clear();
            }
            dirs_.erase(dirs_.begin() + static_cast<std::ptrdiff_t>(i));
        }
        return all;
    }

    /// Moves `pid` back to each hierarchy's root cgroup (a cgroup with a member cannot be removed).
    void leave(int pid) const {
        for (const auto& dir : dirs_) {
            const auto boxlite_dir = dir.substr(0, dir.rfind('/'));
            write(boxlite_dir.substr(0, boxlite_dir.rfind('/')) + "/cgroup.procs", std::to_string(pid));
        }
    }

    /// Removes the cgroups (they must be empty; retried briefly while the kernel tears tasks down).
    void remove() const {
        for (const auto& dir : dirs_) {
            for (int i = 0; i < 100 && ::rmdir(dir.c_str()) != 0 && errno == EBUSY; ++i) ::usleep(10000);
        }
    }

    /// The v1 hierarchies a box's cgroups are made in (create_v1), in that order; the last is a
    /// hybrid host's cgroup v2 hierarchy, which has no controllers there: the box's cgroup in it
    /// carries the box's cgroup BPF programs (bpf_dir()).
    static constexpr const char* kV1Controllers[] = {"memory", "pids", "cpu", "cpuacct", "unified"};
    static constexpr std::size_t kV1Count = std::size(kV1Controllers);

    /// Box `name`'s folder in each v1 hierarchy of kV1Controllers (same order): "" for a hierarchy
    /// that is missing or not writable here. The one place that names them: create_v1 makes
    /// these, precreate_v1 makes them ahead.
    static std::array<std::string, kV1Count> v1_dirs(const std::string& root, const std::string& name) {
        std::array<std::string, kV1Count> dirs;
        for (std::size_t i = 0; i < kV1Count; ++i) {
            const auto hierarchy = root + "/" + kV1Controllers[i];
            // Every hierarchy has a cgroup.procs at its root (a folder that merely exists is none).
            if (::access((hierarchy + "/cgroup.procs").c_str(), W_OK) == 0) dirs[i] = hierarchy + "/boxlite/" + name;
        }
        return dirs;
    }

    /// On a cgroup v1 host, makes the (empty, limit-less) cgroup directories `create` would make
    /// for box `name`, so that a later `create` finds them (EEXIST) and takes no cgroup lock; see
    /// AttachLockWarmer. Returns the directories made (empty on v2 or where nothing is writable).
    static std::vector<std::string> precreate_v1(const std::string& name) {
        std::vector<std::string> made;
        const std::string root = "/sys/fs/cgroup";
        if (::access((root + "/cgroup.controllers").c_str(), F_OK) == 0) return made;
        for (const auto& dir : v1_dirs(root, name)) {
            if (!dir.empty() && make_dir(dir) == 0) made.push_back(dir);
        }
        return made;
    }

    [[nodiscard]] const std::vector<std::string>& dirs() const noexcept { return dirs_; }
    [[nodiscard]] const std::vector<std::string>& applied() const noexcept { return applied_; }
    [[nodiscard]] const std::vector<std::string>& skipped() const noexcept { return skipped_; }
    [[nodiscard]] const std::string& memory_dir() const noexcept { return memory_dir_; }
    [[nodiscard]] const std::string& cpu_dir() const noexcept { return cpu_dir_; }
    [[nodiscard]] const std::string& pids_dir() const noexcept { return pids_dir_; }
    [[nodiscard]] const std::string& cpuacct_dir() const noexcept { return cpuacct_dir_; }
    /// The box's cgroup v2 directory, where cgroup BPF programs attach: the box's cgroup on a v2
    /// host, its cgroup in the unified hierarchy on a hybrid one; "" where there is none.
    [[nodiscard]] const std::string& bpf_dir() const noexcept { return bpf_dir_; }
    [[nodiscard]] bool v2() const noexcept { return v2_; }

    /// One write(2) of `value`, so errno says why the kernel refused it (a buffered stream
    /// would report a late, generic failure).
    static bool write(const std::string& path, const std::string& value) {
        const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
        if (fd < 0) return false;
        const auto n = ::write(fd, value.data(), value.size());
        const int saved = errno;
        ::close(fd);
        errno = saved;
        return n == static_cast<ssize_t>(value.size());
    }

private:
    /// mkdir of `dir` (<hierarchy>/boxlite/<name>) and of its parent: 0, or the mkdir's errno.
    static int make_dir(const std::string& dir) {
        ::mkdir(dir.substr(0, dir.rfind('/')).c_str(), 0755);
        return ::mkdir(dir.c_str(), 0755) == 0 ? 0 : errno;
    }

    /// Makes `dir` (or finds it made, by precreate_v1) and records it; "" when it cannot be made.
    std::string make(const std::string& dir) {
        if (dir.empty()) return {};
        if (const int error = make_dir(dir); error != 0 && error != EEXIST) {
            errno = error;
            return {};
        }
        dirs_.push_back(dir);
        return dir;
    }

    void create_v2(const std::string& root, const std::string& name, const CgroupLimits& limits) {
        v2_ = true;
        // Controllers must be enabled top-down for the child to get their files.
        write(root + "/cgroup.subtree_control", "+memory +pids +cpu");
        const auto parent = root + "/boxlite";
        ::mkdir(parent.c_str(), 0755);
        write(parent + "/cgroup.subtree_control", "+memory +pids +cpu");
        const auto dir = make(parent + "/" + name);
        if (dir.empty()) {
            skipped_.push_back("all (cannot create " + root + "/boxlite/" + name + ": " + std::strerror(errno) + ")");
            return;
        }
        memory_dir_ = cpu_dir_ = pids_dir_ = bpf_dir_ = dir;
        apply(limits.memory_bytes, dir + "/memory.max", "memory", [](std::uint64_t v) { return std::to_string(v); });
        apply(limits.pids, dir + "/pids.max", "pids", [](std::uint64_t v) { return std::to_string(v); });
        apply(limits.cpus ? std::optional<std::uint64_t>(*limits.cpus) : std::nullopt, dir + "/cpu.max", "cpu",
              [](std::uint64_t v) { return std::to_string(v * 100000) + " 100000"; });
    }

    void create_v1(const std::string& root, const std::string& name, const CgroupLimits& limits) {
        static_assert(kV1Count == 5, "memory, pids, cpu, cpuacct, unified: the order the lines below index");
        const auto dirs = v1_dirs(root, name);
        memory_dir_ = make(dirs[0]);
        pids_dir_ = make(dirs[1]);
        cpu_dir_ = make(dirs[2]);
        cpuacct_dir_ = make(dirs[3]);
        bpf_dir_ = make(dirs[4]);
        if (memory_dir_.empty()) {
            if (limits.memory_bytes) skipped_.emplace_back("memory (no writable v1 memory controller)");
        } else {
            apply(limits.memory_bytes, memory_dir_ + "/memory.limit_in_bytes", "memory",
                  [](std::uint64_t v) { return std::to_string(v); });
        }
        if (pids_dir_.empty()) {
            if (limits.pids) skipped_.emplace_back("pids (no writable v1 pids controller)");
        } else {
            apply(limits.pids, pids_dir_ + "/pids.max", "pids", [](std::uint64_t v) { return std::to_string(v); });
        }
        if (cpu_dir_.empty()) {
            if (limits.cpus) skipped_.emplace_back("cpu (no writable v1 cpu controller)");
        } else if (limits.cpus) {
            write(cpu_dir_ + "/cpu.cfs_period_us", "100000");
            apply(std::optional<std::uint64_t>(*limits.cpus), cpu_dir_ + "/cpu.cfs_quota_us", "cpu",
                  [](std::uint64_t v) { return std::to_string(v * 100000); });
        }
    }

    template <class Format>
    void apply(const std::optional<std::uint64_t>& value, const std::string& file, const std::string& what,
               Format format) {
        if (!value) return;
        if (write(file, format(*value))) {
            applied_.push_back(what + "=" + std::to_string(*value));
            applied_dirs_.push_back(file.substr(0, file.rfind('/')));
        } else {
            skipped_.push_back(what + " (writing " + file + " failed: " + std::strerror(errno) + ")");
        }
    }

    bool v2_ = false;
    std::vector<std::string> dirs_;
    std::vector<std::string> applied_;
    std::vector<std::string> applied_dirs_;  ///< the cgroup each applied_ entry was set in
    std::vector<std::string> skipped_;
    std::string memory_dir_, cpu_dir_, pids_dir_, cpuacct_dir_, bpf_dir_;
};

/// Pays the kernel's cgroup-attach grace period early, off a box's start path (cgroup v1).
///
/// Every write to a `cgroup.procs` takes `cgroup_threadgroup_rwsem` for writing, and taking it
/// waits for an RCU grace period (7-16 ms on this kind of host) unless another writer took it
/// within about the last grace period; it holds the global `cgroup_mutex` meanwhile, so a
/// `mkdir` of a cgroup waits as well. The shim's join of the box's init is such a write, and the
/// box is reported ready only after it. This thread writes the process's own pid into the cgroup
/// it is already in (no move: only the lock is taken), once at once and then every `period`,
/// until stopped or `limit` has passed, so the shim's join finds the lock warm and takes
/// microseconds. Start it only after the box's cgroup directories exist (precreate_v1): a
/// `mkdir` behind the first write would wait out the grace period on the start path instead.
/// Inert on a cgroup v2 host, without a writable v1 pids hierarchy, or when the write fails.
class AttachLockWarmer {
public:
    AttachLockWarmer() = default;
    AttachLockWarmer(const AttachLockWarmer&) = delete;
    AttachLockWarmer& operator=(const AttachLockWarmer&) = delete;
    ~AttachLockWarmer() { stop(); }

    void start(std::chrono::milliseconds period = std::chrono::milliseconds(2),
               std::chrono::milliseconds limit = std::chrono::milliseconds(2000)) {
        if (thread_.joinable()) return;
        const auto procs = own_pids_procs();
        if (procs.empty()) return;
        const auto pid = std::to_string(::getpid());
        stopped_ = false;
        try {
            thread_ = std::thread([this, procs, pid, period, limit] {
                // Only ever a write that moves nothing: the file must list this process already
                // (a path from /proc/self/cgroup that names another cgroup here, as in a container
                // without its own cgroup namespace, would move it).
                if (!lists(procs, pid)) return;
                const auto until = std::chrono::steady_clock::now() + limit;
                std::unique_lock lock(mutex_);
                while (!stopped_ && std::chrono::steady_clock::now() < until) {
                    lock.unlock();
                    const bool written = CgroupSet::write(procs, pid);
                    lock.lock();
                    if (!written) break;
                    wake_.wait_for(lock, period, [this] { return stopped_; });
                }
            });
        } catch (const std::system_error&) {
            // No thread to be had: stay inert (the join then pays its grace period, as before).
        }
    }

    void stop() {
        if (!thread_.joinable()) return;
        {
            std::lock_guard lock(mutex_);
            stopped_ = true;
        }
        wake_.notify_all();
        thread_.join();
    }

private:
    /// Whether the cgroup.procs file `procs` lists `pid` (one pid per line).
    static bool lists(const std::string& procs, const std::string& pid) {
        std::ifstream in(procs);
        std::string line;
        while (std::getline(in, line)) {
            if (line == pid) return true;
        }
        return false;
    }

    /// This process's own cgroup.procs in the v1 pids hierarchy; empty where there is none.
    static std::string own_pids_procs() {
        const std::string root = "/sys/fs/cgroup";
        if (::access((root + "/cgroup.controllers").c_str(), F_OK) == 0) return {};
        std::ifstream in("/proc/self/cgroup");
        std::string line;
        while (std::getline(in, line)) {
            const auto first = line.find(':');
            const auto second = first == std::string::npos ? first : line.find(':', first + 1);
            if (second == std::string::npos) continue;
            const auto controllers = "," + line.substr(first + 1, second - first - 1) + ",";
            if (controllers.find(",pids,") == std::string::npos) continue;
            const auto path = line.substr(second + 1);
            if (path.empty() || path[0] != '/' || path.find("/..") != std::string::npos) return {};
            const auto procs = root + "/pids" + (path == "/" ? std::string() : path) + "/cgroup.procs";
            return ::access(procs.c_str(), W_OK) == 0 ? procs : std::string();
        }
        return {};
    }

    std::thread thread_;
    std::mutex mutex_;
    std::condition_variable wake_;
    bool stopped_ = false;
};

}  // namespace boxlite::jailer
