// A hostile box cannot reach or starve what serves it (issue 17): the agent (the box's PID 1) and
// the shim are not dumpable, so box processes cannot open their descriptors or memory, and the
// OOM killer never picks the agent, while the box's own commands stay ordinary victims.
#include <boxlite/boxlite.hpp>

#include "namespace_fixture.hpp"
#include "shim/capped_log.hpp"

#include <gtest/gtest.h>

#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>
#include <thread>

using namespace boxlite;
namespace fs = std::filesystem;

namespace {

class NamespaceLimits : public test::NamespaceBox {
protected:
    /// `script` through sh -c as root; stdout and stderr together, then "rc=<exit code>".
    std::string sh(LiteBox& box, const std::string& script) {
        return run(box, BoxCommand("sh").args({"-c", "(" + script + ") 2>&1; echo rc=$?"})).stdout_text;
    }

    /// Whether this process may lower oom_score_adj (CAP_SYS_RESOURCE, which some sandboxes drop
    /// even for root); without it the shim cannot make itself or the agent -1000.
    static bool can_lower_oom_score_adj() {
        std::ifstream status("/proc/self/status");
        for (std::string line; std::getline(status, line);) {
            if (line.rfind("CapEff:", 0) == 0) return ((std::stoull(line.substr(7), nullptr, 16) >> 24) & 1) != 0;
        }
        return false;
    }

    /// cgroup.info of a box that has started (a box starts at its first command).
    std::string cgroup_info(LiteBox& box) {
        (void)run(box, BoxCommand("true"));
        std::ifstream info(home_->path() / "boxes" / box.id().str() / "cgroup.info");
        return {std::istreambuf_iterator<char>(info), std::istreambuf_iterator<char>()};
    }

    /// The host pid of the box's agent, from agent.pid in its directory.
    int agent_pid(const LiteBox& box) {
        std::ifstream in(home_->path() / "boxes" / box.id().str() / "agent.pid");
        int pid = 0;
        in >> pid;
        return pid;
    }
};

std::string read_proc(const std::string& path) {
    std::ifstream in(path);
    std::string text;
    std::getline(in, text);
    return text;
}

TEST_F(NamespaceLimits, AgentDescriptorsAndMemoryAreClosedToTheBox) {
    auto box = make_box();
    // The attack: a box process appending to the host's agent.log through PID 1's stdout.
    const auto write_attempt = sh(box, "echo x > /proc/1/fd/1");
    EXPECT_NE(write_attempt.find("Permission denied"), std::string::npos) << write_attempt;
    EXPECT_EQ(write_attempt.find("rc=0"), std::string::npos) << write_attempt;
    // Listing the names is allowed (as root); following a link is what needs ptrace access.
    const auto follow = sh(box, "cat /proc/1/fd/0");
    EXPECT_NE(follow.find("Permission denied"), std::string::npos) << follow;
    EXPECT_EQ(sh(box, "readlink /proc/1/fd/1; echo $?"), "1\nrc=0\n");
    // /proc/<pid>/mem is opened with the same check as PTRACE_ATTACH (ptrace_may_access in
    // attach mode): a non-dumpable target and no CAP_SYS_PTRACE in the box.
    EXPECT_NE(sh(box, "head -c 1 /proc/1/mem").find("Permission denied"), std::string::npos);
    // Commands are dumpable again after their own execve: a sibling's descriptors are readable.
    EXPECT_EQ(sh(box, "sleep 5 & ls /proc/$!/fd > /dev/null; echo listed=$?; kill $!"), "listed=0\nrc=0\n");
}

TEST_F(NamespaceLimits, PtraceAttachToTheAgentIsRefusedInTheBox) {
    // The probe comes in through a read-only volume: any box root can run it (it is static).
    auto o = options(true);
    VolumeSpec probe;
    probe.host_path = test::built_binary("probe/boxlite_ptrace_probe").parent_path().string();
    probe.guest_path = "/probe";
    probe.read_only = true;
    o.volumes = {probe};
    auto created = runtime_->create(o);
    ASSERT_TRUE(created) << created.error().to_string();
    auto box = *created;
    // PID 1 is the agent: non-dumpable, and the box has no CAP_SYS_PTRACE.
    EXPECT_EQ(sh(box, "/probe/boxlite_ptrace_probe 1"), "refused EPERM\nrc=1\n");
    // The same probe attaches to a command of the box (dumpable, same user): ptrace itself
    // works in the box, so the refusal above is the agent's own protection. (Yama's
    // ptrace_scope >= 1 allows descendants only: then a sibling is refused too.)
    const auto yama = read_proc("/proc/sys/kernel/yama/ptrace_scope");
    if (yama.empty() || yama == "0") {
        EXPECT_EQ(sh(box, "sleep 5 & /probe/boxlite_ptrace_probe $!; kill $!"), "attached\nrc=0\n");
    }
}

TEST_F(NamespaceLimits, ShimIsNotDumpableAndIsExemptFromTheOomKiller) {
    if (!can_lower_oom_score_adj()) GTEST_SKIP() << "precondition: no CAP_SYS_RESOURCE (cannot set -1000)";
    auto box = make_box();
    (void)run(box, BoxCommand("true"));
    const int agent = agent_pid(box);
    ASSERT_GT(agent, 0);
    const auto stat = read_proc("/proc/" + std::to_string(agent) + "/stat");
    // Field 4 of /proc/<pid>/stat is the parent: the shim.
    std::istringstream fields(stat.substr(stat.rfind(')') + 2));
    std::string state;
    int shim = 0;
    fields >> state >> shim;
    ASSERT_GT(shim, 1);
    EXPECT_EQ(read_proc("/proc/" + std::to_string(shim) + "/oom_score_adj"), "-1000");
    EXPECT_EQ(read_proc("/proc/" + std::to_string(agent) + "/oom_score_adj"), "-1000");
    // Non-dumpable processes' /proc files belong to root whatever their owner; the flag itself
    // is visible only as "ptrace not allowed", tested from inside the box above. Here: the
    // shim's fd directory exists (we are root with CAP_SYS_PTRACE), the box never sees it.
    EXPECT_TRUE(fs::exists("/proc/" + std::to_string(shim) + "/fd"));
}

TEST_F(NamespaceLimits, AgentIsExemptFromTheOomKillerAndCommandsAreNot) {
    if (!can_lower_oom_score_adj()) GTEST_SKIP() << "precondition: no CAP_SYS_RESOURCE (cannot set -1000)";
    auto box = make_box();
    EXPECT_EQ(sh(box, "cat /proc/1/oom_score_adj"), "-1000\nrc=0\n");
    EXPECT_EQ(sh(box, "cat /proc/self/oom_score_adj"), "0\nrc=0\n");
    // A command cannot make itself exempt: the floor of everything in the box is 0.
    EXPECT_NE(sh(box, "echo -1000 > /proc/self/oom_score_adj").find("rc=1"), std::string::npos);
    EXPECT_NE(sh(box, "echo -17 > /proc/self/oom_adj").find("rc=1"), std::string::npos);
    EXPECT_EQ(sh(box, "cat /proc/self/oom_score_adj"), "0\nrc=0\n");
}

TEST_F(NamespaceLimits, AgentIsOutOfTheOomKillersReachEitherWay) {
    auto box = make_box();
    const auto info = cgroup_info(box);
    if (info.find("applied memory=") == std::string::npos) {
        GTEST_SKIP() << "precondition: no writable memory cgroup controller on this host\n" << info;
    }
    const auto agent = std::to_string(agent_pid(box));
    if (read_proc("/proc/" + agent + "/oom_score_adj") == "-1000") return;  // the first way
    // The second (no CAP_SYS_RESOURCE, cgroup v1): the agent is out of the box's memory cgroup,
    // its commands are in it.
    std::ifstream agent_cgroups("/proc/" + agent + "/cgroup");
    std::string agent_memory;
    for (std::string line; std::getline(agent_cgroups, line);) {
        if (line.find(":memory:") != std::string::npos) agent_memory = line;
    }
    ASSERT_FALSE(agent_memory.empty()) << "the agent has -1000 nor a v1 memory cgroup";
    EXPECT_EQ(agent_memory.find(box.id().str()), std::string::npos) << agent_memory;
    const auto command = sh(box, "grep :memory: /proc/self/cgroup");
    EXPECT_NE(command.find("/boxlite/" + box.id().str()), std::string::npos) << command;
    // Also for another user (the join happens before the user switch).
    const auto user = run(box, BoxCommand("sh").args({"-c", "grep :memory: /proc/self/cgroup"}).user("box")).stdout_text;
    EXPECT_NE(user.find("/boxlite/" + box.id().str()), std::string::npos) << user;
}

std::string read_file_text(const std::string& path) {
    std::ifstream in(path);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/// The agent's children named boxlite-spare (guest/agent.cpp: the process the next command
/// becomes, where the agent is kept out of the box's memory cgroup).
std::vector<int> spares_of(int agent) {
    std::vector<int> found;
    for (const auto& entry : fs::directory_iterator("/proc")) {
        const auto name = entry.path().filename().string();
        if (name.find_first_not_of("0123456789") != std::string::npos) continue;
        const auto stat = read_proc(entry.path().string() + "/stat");
        const auto open = stat.find('('), close = stat.rfind(')');
        if (open == std::string::npos || close == std::string::npos) continue;
        std::istringstream rest(stat.substr(close + 2));
        char state = 0;
        int ppid = 0;
        rest >> state >> ppid;
        if (ppid == agent && stat.substr(open + 1, close - open - 1) == "boxlite-spare" && state != 'Z')
            found.push_back(std::stoi(name));
    }
    return found;
}

TEST_F(NamespaceLimits, TheNextCommandsSpareWaitsInTheMemoryCgroupHoldingNothingOfTheAgents) {
    auto box = make_box();
    // The first command (the spare forked once the shim had moved the agent into the box's
    // cgroups, where there is one) is in every cgroup of the box.
    const auto first = sh(box, "cat /proc/self/cgroup");
    const auto info = cgroup_info(box);
    if (info.find("applied memory=") == std::string::npos) {
        GTEST_SKIP() << "precondition: no writable memory cgroup controller on this host\n" << info;
    }
    const int agent = agent_pid(box);
    if (read_proc("/proc/" + std::to_string(agent) + "/oom_score_adj") == "-1000") {
        // The agent is in the memory cgroup itself: commands are forked there, no spare.
        EXPECT_TRUE(spares_of(agent).empty());
        return;
    }
    {
        std::ifstream agent_lines("/proc/" + std::to_string(agent) + "/cgroup");
        for (std::string line; std::getline(agent_lines, line);) {
            if (line.find(":memory:") == std::string::npos) {
                EXPECT_NE(first.find(line + "\n"), std::string::npos) << line << "\n" << first;
            } else {
                EXPECT_NE(first.find(":memory:/boxlite/" + box.id().str() + "\n"), std::string::npos) << first;
            }
        }
    }
    // From the second command on (cgroup_info's), the spare of the next one is forked once the
    // last one has started (it names itself right after the fork). After the first alone there
    // is none (MetricsCountTheBoxsProcesses counts the box's processes then).
    auto spares = spares_of(agent);
    for (int i = 0; i < 10000 && spares.empty(); ++i) {
        ::usleep(1000);
        spares = spares_of(agent);
    }
    ASSERT_EQ(spares.size(), 1U) << "the agent has no spare (or more than one)";
    const auto spare = std::to_string(spares[0]);
    std::ifstream cgroups("/proc/" + spare + "/cgroup");
    std::string memory;
    for (std::string line; std::getline(cgroups, line);) {
        if (line.find(":memory:") != std::string::npos) memory = line;
    }
    EXPECT_NE(memory.find("/boxlite/" + box.id().str()), std::string::npos) << memory;
    // In every other cgroup it is where the agent is (the box's pids and cpu limits bind it).
    std::ifstream agent_cgroups("/proc/" + std::to_string(agent) + "/cgroup");
    const auto spare_cgroups = read_file_text("/proc/" + spare + "/cgroup");
    for (std::string line; std::getline(agent_cgroups, line);) {
        if (line.find(":memory:") == std::string::npos) {
            EXPECT_NE(spare_cgroups.find(line + "\n"), std::string::npos) << line << "\n" << spare_cgroups;
        }
    }
    // Its descriptors: the agent's stdio and its socket to the agent, nothing else (no listening
    // socket, no connection, no other command's pipe).
    std::vector<std::string> extra;
    for (const auto& fd : fs::directory_iterator("/proc/" + spare + "/fd")) {
        const auto n = fd.path().filename().string();
        if (n != "0" && n != "1" && n != "2") extra.push_back(fs::read_symlink(fd.path()).string());
    }
    ASSERT_EQ(extra.size(), 1U);
    EXPECT_EQ(extra[0].rfind("socket:", 0), 0U) << extra[0];

    // Killed from the host, the next command is forked by the agent (and joins the cgroup);
    // a new spare follows it.
    ASSERT_EQ(::kill(spares[0], SIGKILL), 0);
    for (int i = 0; i < 10000 && fs::exists("/proc/" + spare); ++i) ::usleep(1000);
    ASSERT_FALSE(fs::exists("/proc/" + spare)) << "the agent did not reap its killed spare";
    const auto command = sh(box, "grep :memory: /proc/self/cgroup");
    EXPECT_NE(command.find("/boxlite/" + box.id().str()), std::string::npos) << command;
    spares = spares_of(agent);
    for (int i = 0; i < 10000 && spares.empty(); ++i) {
        ::usleep(1000);
        spares = spares_of(agent);
    }
    ASSERT_EQ(spares.size(), 1U);
    EXPECT_NE(std::to_string(spares[0]), spare);

    // Killed from inside the box just before the next exec (`kill -9 -1` spares only the caller
    // and PID 1): whether or not the spare had taken the command, the command runs.
    for (int round = 0; round < 10; ++round) {
        const auto killer = run(box, BoxCommand("sh").args({"-c", "kill -9 -1; echo killed"}));
        EXPECT_EQ(killer.stdout_text, "killed\n");
        EXPECT_EQ(sh(box, "echo alive"), "alive\nrc=0\n") << "round " << round;
    }
}

TEST_F(NamespaceLimits, PidsLimitIs4096ByDefault) {
    auto box = make_box();
    const std::string text = cgroup_info(box);
    if (text.find("pids ") == std::string::npos || text.find("applied pids=") == std::string::npos) {
        GTEST_SKIP() << "precondition: no writable pids cgroup controller on this host\n" << text;
    }
    EXPECT_NE(text.find("applied pids=4096\n"), std::string::npos) << text;
    // RLIMIT_NPROC too (it binds the box's non-root users).
    EXPECT_NE(sh(box, "ulimit -u").find("4096\n"), std::string::npos);
}

TEST_F(NamespaceLimits, ForkBombHitsThePidsLimitAndTheHostKeepsWorking) {
    auto o = options();
    o.resource_limits.max_processes = 64;
    auto created = runtime_->create(o);
    ASSERT_TRUE(created) << created.error().to_string();
    auto box = *created;
    const std::string text = cgroup_info(box);
    if (text.find("applied pids=64\n") == std::string::npos) {
        GTEST_SKIP() << "precondition: no writable pids cgroup controller on this host\n" << text;
    }
    std::string pids_dir;
    {
        std::istringstream lines(text);
        for (std::string line; std::getline(lines, line);) {
            if (line.rfind("pids ", 0) == 0) pids_dir = line.substr(5);
        }
    }
    ASSERT_FALSE(pids_dir.empty()) << text;
    EXPECT_EQ(read_proc(pids_dir + "/pids.max"), "64");
    // Background sleeps until fork fails (the inner shell gives up at its first "can't fork";
    // 200 at most), while the host forks and execs as usual. Then only builtins: the box is full.
    std::thread host([] { EXPECT_EQ(std::system("sleep 0.5; true"), 0); });
    // No sh() here: its subshell would be one of the processes `kill -9 -1` (all but the caller
    // and PID 1) ends.
    const auto out = run(box,
                         BoxCommand("sh").args({"-c",
                                                "sh -c 'i=0; while [ $i -lt 200 ]; do sleep 30 & i=$((i+1)); done' "
                                                "2>/tmp/err; echo inner=$?; read line < /tmp/err; echo \"$line\"; "
                                                "kill -9 -1"}))
                         .stdout_text;
    host.join();
    EXPECT_EQ(out.rfind("inner=", 0), 0U) << out;
    EXPECT_NE(out.rfind("inner=0\n", 0), 0U) << "every fork succeeded:\n" << out;
    EXPECT_NE(out.find("can't fork"), std::string::npos) << out;
    // The kernel counted the refusals: pids.events says "max N" with N > 0.
    std::ifstream events(pids_dir + "/pids.events");
    std::string key;
    std::uint64_t refused = 0;
    events >> key >> refused;
    EXPECT_EQ(key, "max");
    EXPECT_GT(refused, 0U);
    // The agent still answers.
    EXPECT_EQ(sh(box, "echo alive"), "alive\nrc=0\n");
}

TEST_F(NamespaceLimits, AgentLogStaysUnderItsCapWhenTheBoxFloodsIt) {
    auto box = make_box();
    const auto log = home_->path() / "boxes" / box.id().str() / "agent.log";
    // The flood: 200 MB at the agent's stdout. Refused now (not dumpable), and the
    // agent's stdout is a pipe to the shim, which caps the file in any case.
    EXPECT_NE(sh(box, "head -c 200000000 /dev/zero > /proc/1/fd/1").find("Permission denied"), std::string::npos);
    EXPECT_NE(sh(box, "head -c 200000000 /dev/zero > /proc/1/fd/2").find("Permission denied"), std::string::npos);
    ASSERT_TRUE(fs::exists(log));
    EXPECT_LE(fs::file_size(log), shim::CappedLog::kDefaultMaxBytes);
    // Nothing of the box's own streams reaches it either.
    EXPECT_EQ(sh(box, "echo to-stdout; echo to-stderr >&2"), "to-stdout\nto-stderr\nrc=0\n");
    std::ifstream in(log);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_EQ(text.find("to-stdout"), std::string::npos) << text;
}

TEST_F(NamespaceLimits, TheLogCapOfBoxliteOptionsReachesTheShim) {
    BoxliteOptions capped;
    capped.home_dir = home_->path() / "capped";
    capped.engine = EngineKind::Namespace;
    capped.log_max_bytes = 65536;
    auto runtime = open_runtime(capped);
    ASSERT_TRUE(runtime) << runtime.error().to_string();
    auto o = options(false);
    o.detach = true;
    auto box = runtime->create(o);
    ASSERT_TRUE(box) << box.error().to_string();
    ASSERT_TRUE(box->start()) << "start";
    auto info = box->info();
    ASSERT_TRUE(info && info->pid);
    std::ifstream in("/proc/" + std::to_string(*info->pid) + "/cmdline");
    std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_NE(cmdline.find(std::string("--log-max-bytes") + '\0' + "65536" + '\0'), std::string::npos);
    ASSERT_TRUE(runtime->remove(box->id().str(), true));
}

TEST_F(NamespaceLimits, WritingPastTheDiskSizeFailsWithEnospcAndTheDiskPersists) {
    if (::access("/dev/loop-control", R_OK | W_OK) != 0)
        GTEST_SKIP() << "precondition: no loop device (/dev/loop-control)";
    if (::access("/usr/sbin/mkfs.ext4", X_OK) != 0 && ::access("/sbin/mkfs.ext4", X_OK) != 0)
        GTEST_SKIP() << "precondition: mkfs.ext4 is not installed (apt-get install e2fsprogs)";
    auto o = options(false);
    o.disk_size_gb = 1;
    auto created = runtime_->create(o);
    ASSERT_TRUE(created) << created.error().to_string();
    auto box = *created;
    (void)run(box, BoxCommand("true"));  // the first start makes the image
    const auto dir = home_->path() / "boxes" / box.id().str();
    // A sparse image of the size asked, nothing of it under upper/ on the host.
    ASSERT_TRUE(fs::exists(dir / "disk.ext4"));
    EXPECT_EQ(fs::file_size(dir / "disk.ext4"), std::uintmax_t{1} << 30);
    EXPECT_FALSE(fs::exists(dir / "upper"));
    const auto full = sh(box, "dd if=/dev/zero of=/fill bs=1M count=1200");
    EXPECT_NE(full.find("No space left on device"), std::string::npos) << full;
    EXPECT_EQ(full.find("rc=0"), std::string::npos) << full;
    // Space comes back, and what the box wrote survives a stop and a start.
    EXPECT_EQ(sh(box, "rm /fill && echo kept > /kept && sync && echo ok"), "ok\nrc=0\n");
    ASSERT_TRUE(box.stop()) << "stop";
    ASSERT_TRUE(box.start()) << "start";
    EXPECT_EQ(sh(box, "cat /kept"), "kept\nrc=0\n");
    // The mount exists only in the box's mount namespace: the host sees none.
    std::ifstream mounts("/proc/self/mountinfo");
    const std::string table((std::istreambuf_iterator<char>(mounts)), std::istreambuf_iterator<char>());
    EXPECT_EQ(table.find((dir / "disk").string()), std::string::npos) << table;
}

TEST_F(NamespaceLimits, AnOomKilledCommandSaysSoAndTheAgentSurvives) {
    auto o = options();
    o.memory_mib = BoxOptions::kMinMemoryMib;  // 128 MiB
    auto created = runtime_->create(o);
    ASSERT_TRUE(created) << created.error().to_string();
    auto box = *created;
    const std::string text = cgroup_info(box);
    if (text.find("applied memory=") == std::string::npos) {
        GTEST_SKIP() << "precondition: no writable memory cgroup controller on this host\n" << text;
    }
    // A shell variable that grows past the box's memory: the shell is the OOM killer's choice.
    auto out = box.run(BoxCommand("sh").args({"-c", "x=$(head -c 400000000 /dev/zero | tr '\\0' a); echo survived"}));
    ASSERT_TRUE(out) << out.error().to_string();
    EXPECT_EQ(out->exit_code, -9) << out->stdout_text << out->stderr_text;  // 137 in the CLI
    ASSERT_TRUE(out->error_message.has_value());
    EXPECT_NE(out->error_message->find("out-of-memory"), std::string::npos) << *out->error_message;
    // The agent answered through it and goes on; a plain SIGKILL is not called an OOM kill.
    EXPECT_EQ(sh(box, "echo next"), "next\nrc=0\n");
    auto killed = box.run(BoxCommand("sh").args({"-c", "kill -9 $$"}));
    ASSERT_TRUE(killed) << killed.error().to_string();
    EXPECT_EQ(killed->exit_code, -9);
    EXPECT_FALSE(killed->error_message.has_value()) << *killed->error_message;
}

TEST(CappedLog, RotatesOnceAtTheCapAndKeepsOneOldFile) {
    test::TempDir dir("boxlite-capped-log");
    const auto path = (dir.path() / "agent.log").string();
    shim::CappedLog log;
    ASSERT_TRUE(log.open(path, 1000));
    const std::string line(300, 'x');
    for (int i = 0; i < 20; ++i) log.write(line.data(), line.size());  // 6000 bytes
    EXPECT_LE(fs::file_size(path), 1000U);
    EXPECT_EQ(fs::file_size(path + ".1"), 1000U);
    EXPECT_FALSE(fs::exists(path + ".2"));
    // One write bigger than the cap is split across files, never over it.
    const std::string big(2500, 'y');
    log.write(big.data(), big.size());
    EXPECT_LE(fs::file_size(path), 1000U);
    EXPECT_EQ(fs::file_size(path + ".1"), 1000U);
    // Reopening appends and counts what is there.
    log.close();
    const auto before = fs::file_size(path);
    ASSERT_TRUE(log.open(path, 1000));
    log.write("z", 1);
    EXPECT_EQ(fs::file_size(path), before + 1 > 1000 ? 1U : before + 1);
}

}  // namespace
