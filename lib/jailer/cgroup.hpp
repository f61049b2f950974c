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
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace boxlite::jailer {

struct CgroupLimits {
    std::optional<std::uint64_t> memory_bytes;
    std::optional<std::uint32_t> cpus;  ///< CFS quota of this many CPUs
    std::optional<std::uint64_t> pids;
};

/// fork(), but the child starts in the cgroup v2 directory `v2_fd` (clone3 with
/// CLONE_INTO_CGROUP, see CgroupSet::SelfJoin) when there is one and this process has a single
/// thread (glibc's fork bookkeeping is then moot: no lock can be held by another thread).
/// `born_in_v2` says whether it does; where the kernel refuses (before 5.7, a v2 directory that
/// cannot take processes, …) this falls back to fork().
inline pid_t fork_into_cgroup(int v2_fd, bool& born_in_v2) {
    born_in_v2 = false;
    struct stat task {};
    // /proc/self/task has two links plus one per thread.
    if (v2_fd >= 0 && ::stat("/proc/self/task", &task) == 0 && task.st_nlink == 3) {
        struct {  // struct clone_args, as of Linux 5.7 (CLONE_ARGS_SIZE_VER2)
            std::uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid,
                set_tid_size, cgroup;
        } args{};
        constexpr std::uint64_t kCloneIntoCgroup = 0x200000000ULL;
        args.flags = kCloneIntoCgroup;
        args.exit_signal = SIGCHLD;
        args.cgroup = static_cast<std::uint64_t>(v2_fd);
        const long pid = ::syscall(SYS_clone3, &args, sizeof args);
        if (pid >= 0) {
            born_in_v2 = true;
            return static_cast<pid_t>(pid);
        }
    }
    return ::fork();
}

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
    /// Each write takes the kernel's global attach lock, which can wait for an RCU grace period
    /// (7-16 ms here): a box's init joins with SelfJoin instead.
    bool add(int pid, bool except_memory = false) {
        bool all = true;
        for (std::size_t i = 0; i < dirs_.size();) {
            if ((except_memory && !v2_ && dirs_[i] == memory_dir_) ||
                write(dirs_[i] + "/cgroup.procs", std::to_string(pid))) {
                ++i;
                continue;
            }
            all = false;
            drop(i, "joining " + dirs_[i] + " failed: " + std::strerror(errno));
        }
        return all;
    }

    /// How a box's init joins the box's cgroups itself, without the kernel's global attach lock.
    ///
    /// A write of a pid to a `cgroup.procs` (v1 or v2), or of another task's pid to a v1 `tasks`,
    /// takes `cgroup_threadgroup_rwsem` for writing, which waits for an RCU grace period unless
    /// another writer took it moments before (7-16 ms on this kind of host), and holds the global
    /// cgroup mutex meanwhile. Two ways in take neither: a single-threaded process writing "0"
    /// (itself) to a v1 hierarchy's `tasks` moves only itself and skips the lock (0.15 ms for the
    /// four hierarchies here, against 8-11 ms), and a process made by clone3 with
    /// CLONE_INTO_CGROUP starts in a cgroup v2 directory (0.2 ms against 9 ms). The shim opens
    /// what the init needs before making it (open_self_join), makes it with fork_into_cgroup(),
    /// the init calls join() first thing, and the shim settles the outcome with
    /// settle_self_join(), which does add()'s bookkeeping for whatever could not be joined that way.
    /// fork_self_joined() does all of it.
    class SelfJoin {
    public:
        SelfJoin() = default;
        SelfJoin(const SelfJoin&) = delete;
        SelfJoin& operator=(const SelfJoin&) = delete;
        ~SelfJoin() { close(); }

        /// The v2 directory's descriptor for CLONE_INTO_CGROUP; -1 where there is none.
        [[nodiscard]] int v2_fd() const noexcept { return v2_fd_; }

        /// In the new process, first thing (the shim makes it while it has a single thread, so it
        /// may allocate): writes "0" to every v1 `tasks` file, then closes them.
        /// Returns "<errno> <dir>\n" per failed join.
        std::string join() {
            std::string report;
            for (auto& [dir, fd] : tasks_) {
                if (::write(fd, "0", 1) != 1) report += std::to_string(errno != 0 ? errno : EIO) + " " + dir + "\n";
                ::close(fd);
                fd = -1;
            }
            return report;
        }

        void close() noexcept {
            for (auto& entry : tasks_) {
                if (entry.second >= 0) ::close(entry.second);
                entry.second = -1;
            }
            if (v2_fd_ >= 0) ::close(v2_fd_);
            v2_fd_ = -1;
        }

    private:
        friend class CgroupSet;
        std::vector<std::pair<std::string, int>> tasks_;  ///< v1 cgroup, descriptor of its `tasks`
        std::string v2_dir_;
        int v2_fd_ = -1;
    };

    /// Opens what a box's init needs to join every created cgroup itself (SelfJoin), except, on
    /// v1, the memory cgroup with `except_memory` (see add()). A file that cannot be opened is
    /// left out: settle_self_join() then joins that cgroup with add()'s write.
    void open_self_join(SelfJoin& join, bool except_memory) const {
        join.close();
        join.tasks_.clear();
        join.v2_dir_.clear();
        for (const auto& dir : dirs_) {
            if (v2_ || dir == bpf_dir_) {
                join.v2_dir_ = dir;
                join.v2_fd_ = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            } else if (!(except_memory && dir == memory_dir_)) {
                const int fd = ::open((dir + "/tasks").c_str(), O_WRONLY | O_CLOEXEC);
                if (fd >= 0) join.tasks_.emplace_back(dir, fd);
            }
        }
    }

    /// The shim's side, once the init `pid` has called join() and sent its report: the cgroups it
    /// could not join are removed and their limits move to skipped() (as add() does); a cgroup it
    /// had no way into (no `tasks` descriptor, or, unless `born_in_v2`, the v2 directory) is
    /// joined with add()'s write. The descriptors are closed. Returns false if any join failed.
    bool settle_self_join(SelfJoin& join, int pid, bool born_in_v2, bool except_memory, const std::string& report) {
        join.close();
        bool all = true;
        for (std::size_t i = 0; i < dirs_.size();) {
            const auto& dir = dirs_[i];
            std::string why;
            if (except_memory && !v2_ && dir == memory_dir_) {
                // stays out (see add())
            } else if (dir == join.v2_dir_ && born_in_v2) {
                // made inside it by clone3
            } else if (const auto failed = failed_in(report, dir); failed != 0) {
                why = "joining " + dir + " failed: " + std::strerror(failed);
            } else if (dir == join.v2_dir_ || !has_tasks_fd(join, dir)) {
                if (!write(dir + "/cgroup.procs", std::to_string(pid))) {
                    why = "joining " + dir + " failed: " + std::strerror(errno);
                }
            }
            if (why.empty()) {
                ++i;
                continue;
            }
            all = false;
            drop(i, why);
        }
        return all;
    }

    /// What fork_self_joined() made: the child's pid (-1 with errno when none could be made; 0 in
    /// the child), whether it was born in the v2 cgroup, and the joins it reported as failed.
    struct SelfJoined {
        pid_t pid = -1;
        bool born_in_v2 = false;
        std::string failed_joins;
    };

    /// fork() for a box's init that joins every created cgroup itself (SelfJoin; on v1 not the
    /// memory one with `except_memory`) before it returns in the child; in the parent the joins
    /// are settled (settle_self_join) before it returns. Call it while single-threaded.
    SelfJoined fork_self_joined(bool except_memory) {
        SelfJoined made;
        SelfJoin join;
        open_self_join(join, except_memory);
        int report[2];
        if (::pipe2(report, O_CLOEXEC) != 0) return made;
        made.pid = fork_into_cgroup(join.v2_fd(), made.born_in_v2);
        if (made.pid < 0) {
            const int error = errno;
            ::close(report[0]);
            ::close(report[1]);
            errno = error;
            return made;
        }
        if (made.pid == 0) {
            made.failed_joins = join.join();
            (void)!::write(report[1], made.failed_joins.data(), made.failed_joins.size());
            ::close(report[1]);
            ::close(report[0]);
            return made;
        }
        ::close(report[1]);
        char buf[4096];
        for (;;) {
            const auto n = ::read(report[0], buf, sizeof buf);
            if (n > 0 && made.failed_joins.size() < 65536) made.failed_joins.append(buf, static_cast<std::size_t>(n));
            if (n == 0 || (n < 0 && errno != EINTR)) break;
        }
        ::close(report[0]);
        settle_self_join(join, made.pid, made.born_in_v2, except_memory, made.failed_joins);
        return made;
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
    /// that is missing or not writable here. The one place that names them.
    static std::array<std::string, kV1Count> v1_dirs(const std::string& root, const std::string& name) {
        std::array<std::string, kV1Count> dirs;
        for (std::size_t i = 0; i < kV1Count; ++i) {
            const auto hierarchy = root + "/" + kV1Controllers[i];
            // Every hierarchy has a cgroup.procs at its root (a folder that merely exists is none).
            if (::access((hierarchy + "/cgroup.procs").c_str(), W_OK) == 0) dirs[i] = hierarchy + "/boxlite/" + name;
        }
        return dirs;
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
    /// Forgets the cgroup dirs_[i] that the box's process could not join: removes it, and moves
    /// the limits set there to skipped() with `why`.
    void drop(std::size_t i, const std::string& why) {
        const auto dir = dirs_[i];
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

    /// The errno SelfJoin::join() reported for `dir`, 0 if none.
    static int failed_in(const std::string& report, const std::string& dir) {
        std::size_t at = 0;
        while (at < report.size()) {
            const auto end = std::min(report.find('\n', at), report.size());
            const auto space = report.find(' ', at);
            if (space < end && report.compare(space + 1, end - space - 1, dir) == 0) {
                return std::atoi(report.substr(at, space - at).c_str());
            }
            at = end + 1;
        }
        return 0;
    }

    static bool has_tasks_fd(const SelfJoin& join, const std::string& dir) {
        for (const auto& entry : join.tasks_) {
            if (entry.first == dir) return true;
        }
        return false;
    }

    /// mkdir of `dir` (<hierarchy>/boxlite/<name>) and of its parent: 0, or the mkdir's errno.
    static int make_dir(const std::string& dir) {
        ::mkdir(dir.substr(0, dir.rfind('/')).c_str(), 0755);
        return ::mkdir(dir.c_str(), 0755) == 0 ? 0 : errno;
    }

    /// Makes `dir` (or finds it made) and records it; "" when it cannot be made.
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

}  // namespace boxlite::jailer
