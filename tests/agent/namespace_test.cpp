// End-to-end tests of the namespace engine: real boxlite-shim and boxlite-agent processes, a
// busybox root filesystem, the public runtime API (BoxliteRuntime, LiteBox, Execution).
#include <boxlite/boxlite.hpp>
#include <boxlite/engine/namespace_engine.hpp>
#include <boxlite/engine/select.hpp>
#include "protocol/tar.hpp"

#include "namespace_fixture.hpp"

#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <signal.h>
#include <sys/utsname.h>
#include <sys/wait.h>

#include <atomic>
#include <random>
#include <regex>
#include <thread>

using namespace boxlite;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

using test::NamespaceBox;

std::string sha256(std::string_view data) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_Digest(data.data(), data.size(), digest, &len, EVP_sha256(), nullptr);
    std::string hex;
    for (unsigned i = 0; i < len; ++i) hex += fmt::format("{:02x}", digest[i]);
    return hex;
}

TEST_F(NamespaceBox, EchoInItsOwnNamespaces) {
    auto box = make_box();
    auto out = run(box, BoxCommand("echo").args({"hello", "box"}));
    EXPECT_EQ(out.stdout_text, "hello box\n");
    EXPECT_EQ(out.exit_code, 0);
    EXPECT_EQ(run(box, BoxCommand("hostname")).stdout_text, box.id().short_id() + "\n");
    EXPECT_EQ(run(box, BoxCommand("cat").arg("/proc/1/comm")).stdout_text, "boxlite-agent\n") << "the agent is PID 1";
    // The network is on by default: loopback and eth0 (docs/networking.md).
    const auto dev = run(box, BoxCommand("cat").arg("/proc/net/dev")).stdout_text;
    EXPECT_NE(dev.find("lo:"), std::string::npos);
    EXPECT_NE(dev.find("eth0:"), std::string::npos);
    EXPECT_EQ(std::count(dev.begin(), dev.end(), ':'), 2) << dev;
    EXPECT_NE(run(box, BoxCommand("cat").arg("/proc/mounts")).stdout_text.find("overlay / overlay"), std::string::npos);
    auto info = box.info();
    ASSERT_TRUE(info);
    EXPECT_EQ(info->status, BoxStatus::Running);
    EXPECT_EQ(info->engine, "namespace");
}

TEST_F(NamespaceBox, EnvAndWorkingDir) {
    auto box = make_box();
    auto out = run(
        box,
        BoxCommand("sh").args({"-c", "echo $BOX_LEVEL $CMD_LEVEL; pwd"}).env("CMD_LEVEL", "cmd").working_dir("/tmp"));
    EXPECT_EQ(out.stdout_text, "box cmd\n/tmp\n");
    auto overridden = run(box, BoxCommand("sh").args({"-c", "echo $BOX_LEVEL"}).env("BOX_LEVEL", "command wins"));
    EXPECT_EQ(overridden.stdout_text, "command wins\n");
    auto as_user = run(box, BoxCommand("id").arg("-u").user("box"));
    EXPECT_EQ(as_user.stdout_text, "1000\n");
}

TEST_F(NamespaceBox, ExitCodes) {
    auto box = make_box();
    EXPECT_EQ(run(box, BoxCommand("sh").args({"-c", "exit 7"})).exit_code, 7);
    EXPECT_EQ(run(box, BoxCommand("false")).exit_code, 1);
    auto missing = box.exec(BoxCommand("/bin/no-such-program"));
    ASSERT_FALSE(missing);
    EXPECT_EQ(missing.error().kind(), ErrorKind::Execution);
}

TEST_F(NamespaceBox, KilledBySignalCodes) {
    auto box = make_box();
    EXPECT_EQ(run(box, BoxCommand("sh").args({"-c", "kill -9 $$"})).exit_code, -9);
    auto exec = box.exec(BoxCommand("sleep").arg("60"));
    ASSERT_TRUE(exec);
    ASSERT_TRUE(exec->signal(SIGTERM));
    EXPECT_EQ(exec->wait()->exit_code, -SIGTERM);
    auto killed = box.exec(BoxCommand("sh").args({"-c", "sleep 60 & echo $!; sleep 60; wait"}));
    ASSERT_TRUE(killed);
    auto out = killed->stdout();
    auto line = out->read_line();
    ASSERT_TRUE(line && *line);
    const auto background = **line;
    ASSERT_FALSE(background.empty());
    ASSERT_EQ(run(box, BoxCommand("test").args({"-e", "/proc/" + background})).exit_code, 0)
        << "sleep " << background << " runs";
    ASSERT_TRUE(killed->kill());
    EXPECT_EQ(killed->wait()->exit_code, -SIGKILL);
    // kill() signals the whole process group, so the background sleep died too; the agent, as
    // init, reaps it, and then its /proc entry is gone.
    bool gone = false;
    for (int i = 0; i < 500 && !gone; ++i) {
        gone = run(box, BoxCommand("test").args({"-e", "/proc/" + background})).exit_code != 0;
        if (!gone) std::this_thread::sleep_for(10ms);
    }
    EXPECT_TRUE(gone) << "the background child " << background << " outlived kill()";
}

TEST_F(NamespaceBox, Stdin50MBThroughCatKeepsSha256) {
    auto box = make_box();
    std::string data(50U << 20, '\0');
    std::mt19937_64 rng(42);
    for (std::size_t i = 0; i + 8 <= data.size(); i += 8) {
        const auto v = rng();
        std::memcpy(data.data() + i, &v, 8);
    }
    auto exec = box.exec(BoxCommand("cat"));
    ASSERT_TRUE(exec);
    auto in = exec->stdin();
    auto out = exec->stdout();
    std::thread writer([&] {
        // Odd-sized writes, so frames never line up with pipe or window sizes.
        for (std::size_t off = 0; off < data.size(); off += 777777) {
            ASSERT_TRUE(in->write(std::string_view(data).substr(off, 777777)));
        }
        ASSERT_TRUE(in->close());
    });
    auto echoed = out->read_all();
    writer.join();
    ASSERT_TRUE(echoed) << echoed.error().to_string();
    EXPECT_EQ(echoed->size(), data.size());
    EXPECT_EQ(sha256(*echoed), sha256(data));
    EXPECT_EQ(exec->wait()->exit_code, 0);
}

TEST_F(NamespaceBox, OneGigabyteStdoutToASlowReader) {
    auto box = make_box();
    constexpr std::uint64_t kTotal = 1ULL << 30;
    auto exec = box.exec(BoxCommand("sh").args({"-c", "head -c 1073741824 /dev/zero; echo finished >&2"}));
    ASSERT_TRUE(exec);
    auto out = exec->stdout();
    auto err = exec->stderr();
    // Bulk data at a slow reader's pace: nothing may be lost (that the writer blocks meanwhile
    // is AHostThatDoesNotReadStopsTheWriter's check).
    std::uint64_t total = 0;
    std::vector<std::byte> buf(1 << 20);
    std::size_t reads = 0;
    bool all_zero = true;
    while (true) {
        auto n = out->read_some(buf);
        ASSERT_TRUE(n) << n.error().to_string();
        if (*n == 0) break;
        for (std::size_t i = 0; i < *n; i += 4093) all_zero = all_zero && buf[i] == std::byte{0};
        total += *n;
        if (++reads % 256 == 0) std::this_thread::sleep_for(20ms);  // a slow consumer
    }
    EXPECT_EQ(total, kTotal);
    EXPECT_TRUE(all_zero);
    EXPECT_EQ(*err->read_all(), "finished\n");
    EXPECT_EQ(exec->wait()->exit_code, 0);
}

// Flow control (docs/protocol.md): the agent sends at most the window the host has not
// returned credit for (protocol::kDefaultWindow, 256 KiB) and stops reading the pipe until
// credit comes back, so the pipe fills and the writer blocks. The writer records each 64 KiB
// block it has finished in /tmp/written; with nobody reading it must stall after the window,
// the pipe buffer and one read of the agent's, far below the 12.5 MiB it means to write. (The
// pause only gives a writer that is not held back time to run ahead; it cannot make a
// correct agent fail.)
TEST_F(NamespaceBox, AHostThatDoesNotReadStopsTheWriter) {
    auto box = make_box();
    constexpr int kBlocks = 200;
    auto exec = box.exec(BoxCommand("sh").args(
        {"-c", "i=0; while [ $i -lt 200 ]; do head -c 65536 /dev/zero; i=$((i+1)); echo $i > /tmp/written; done"}));
    ASSERT_TRUE(exec);
    auto out = exec->stdout();
    auto blocks_written = [&] {
        return std::atoi(
            run(box, BoxCommand("sh").args({"-c", "cat /tmp/written 2>/dev/null || echo 0"})).stdout_text.c_str());
    };
    for (int i = 0; i < 3000 && blocks_written() == 0; ++i) std::this_thread::sleep_for(10ms);
    ASSERT_GT(blocks_written(), 0) << "the writer never wrote a block";
    std::this_thread::sleep_for(1s);
    const int stalled = blocks_written();
    constexpr int kBound = static_cast<int>((protocol::kDefaultWindow + (1U << 20)) /
                                            65536);  // + 1 MiB of pipe and reads
    EXPECT_LE(stalled, kBound) << "64 KiB blocks written while the host read nothing: the agent read past its credit";
    auto all = out->read_all();
    ASSERT_TRUE(all) << all.error().to_string();
    EXPECT_EQ(all->size(), std::size_t{kBlocks} * 65536) << "nothing is lost once the host reads";
    EXPECT_EQ(exec->wait()->exit_code, 0);
    EXPECT_EQ(blocks_written(), kBlocks);
}

TEST_F(NamespaceBox, StderrFloodWhileStdinIsWrittenDoesNotDeadlock) {
    auto box = make_box();
    // The process writes 8 MB to stderr before it reads any stdin; we write 8 MB of stdin at the
    // same time. Per-stream credit keeps both moving.
    auto exec = box.exec(BoxCommand("sh").args({"-c", "head -c 8388608 /dev/zero >&2; wc -c"}));
    ASSERT_TRUE(exec);
    auto in = exec->stdin();
    auto out = exec->stdout();
    auto err = exec->stderr();
    std::thread writer([&] {
        const std::string chunk(1 << 20, 'x');
        for (int i = 0; i < 8; ++i) ASSERT_TRUE(in->write(chunk));
        ASSERT_TRUE(in->close());
    });
    auto errors = err->read_all();
    auto counted = out->read_all();
    writer.join();
    EXPECT_EQ(errors->size(), 8U << 20);
    EXPECT_EQ(*counted, "8388608\n");
}

TEST_F(NamespaceBox, HundredConcurrentExecutions) {
    auto box = make_box();
    ASSERT_TRUE(box.start());
    std::vector<std::thread> threads;
    std::atomic<int> good{0};
    for (int i = 0; i < 100; ++i) {
        threads.emplace_back([&, i] {
            auto out = box.run(BoxCommand("sh").args({"-c", "sleep 0.2; echo $0", std::to_string(i)}));
            if (out && out->exit_code == 0 && out->stdout_text == std::to_string(i) + "\n") ++good;
        });
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(good.load(), 100);
    auto metrics = box.metrics();
    ASSERT_TRUE(metrics);
    EXPECT_GE(metrics->commands_executed_total, 100U);
}

TEST_F(NamespaceBox, TtyIsATerminalAndSeesResize) {
    auto box = make_box();
    auto exec = box.exec(BoxCommand("sh")
                             .args({"-c", "[ -t 0 ] && [ -t 1 ] && echo is-a-tty; stty size; read line; stty size"})
                             .tty(true));
    ASSERT_TRUE(exec);
    auto in = exec->stdin();
    auto out = exec->stdout();
    auto next_line = [&]() {
        auto line = out->read_line();
        EXPECT_TRUE(line && *line);
        std::string text = line && *line ? **line : "";
        if (!text.empty() && text.back() == '\r') text.pop_back();
        return text;
    };
    EXPECT_EQ(next_line(), "is-a-tty");
    EXPECT_EQ(next_line(), "24 80");
    ASSERT_TRUE(exec->resize_tty(50, 132));
    ASSERT_TRUE(in->write("go\n"));
    EXPECT_EQ(next_line(), "go") << "the terminal echoes input";
    EXPECT_EQ(next_line(), "50 132");
    EXPECT_EQ(exec->wait()->exit_code, 0);
}

TEST_F(NamespaceBox, TimeoutKills) {
    auto box = make_box();
    const auto start = std::chrono::steady_clock::now();
    auto out = run(box, BoxCommand("sleep").arg("60").timeout(300ms));
    EXPECT_TRUE(out.timed_out);
    EXPECT_EQ(out.exit_code, -SIGKILL);
    EXPECT_TRUE(out.error_message.has_value());
    EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);
}

TEST_F(NamespaceBox, StopStartKeepsAWrittenFile) {
    auto box = make_box(/*auto_remove=*/false);
    EXPECT_EQ(run(box, BoxCommand("sh").args({"-c", "echo persisted > /root/data.txt"})).exit_code, 0);
    const auto pid = box.info()->pid;
    ASSERT_TRUE(pid);
    ASSERT_TRUE(box.stop());
    EXPECT_EQ(box.info()->status, BoxStatus::Stopped);
    EXPECT_FALSE(detail::process_alive(*pid, 0)) << "the shim is gone after stop";
    ASSERT_TRUE(box.start());
    EXPECT_EQ(run(box, BoxCommand("cat").arg("/root/data.txt")).stdout_text, "persisted\n");
    EXPECT_FALSE(fs::exists(*rootfs_ / "root/data.txt")) << "the image rootfs is never written";
}

TEST_F(NamespaceBox, RemoveDeletesEveryTrace) {
    auto box = make_box(/*auto_remove=*/false);
    ASSERT_EQ(run(box, BoxCommand("touch").arg("/root/x")).exit_code, 0);
    const auto id = box.id();
    const auto pid = *box.info()->pid;
    const auto box_dir = home_->path() / "boxes" / id.str();
    ASSERT_TRUE(fs::exists(box_dir / "upper/root/x"));
    // cgroup.info: "<controller> <dir>" lines (dir empty when the controller is not there),
    // then "applied <limit>" and "skipped <limit> (<why>)" lines.
    std::vector<std::string> cgroups;
    {
        std::ifstream info(box_dir / "cgroup.info");
        std::string line;
        while (std::getline(info, line)) {
            const auto space = line.find(' ');
            const auto key = line.substr(0, space);
            const auto value = space == std::string::npos ? std::string() : line.substr(space + 1);
            if (key == "applied" || key == "skipped" || value.empty()) continue;
            EXPECT_TRUE(fs::is_directory(value)) << key << " cgroup '" << value << "' of a running box";
            cgroups.push_back(value);
        }
    }
    EXPECT_FALSE(runtime_->remove(id.str()).has_value()) << "a running box needs force";
    ASSERT_TRUE(runtime_->remove(id.str(), /*force=*/true));
    EXPECT_FALSE(detail::process_alive(pid, 0));
    EXPECT_FALSE(fs::exists(box_dir));
    for (const auto& dir : cgroups) EXPECT_FALSE(fs::exists(dir)) << dir;
    EXPECT_FALSE(*runtime_->exists(id.str()));
}

TEST_F(NamespaceBox, StopKillsWhatIgnoresSigterm) {
    // A second runtime on the same home that gives boxes 300 ms to stop, less than the agent's own
    // grace period (2 s): its stop() must take the forceful path.
    RuntimeSettings impatient;
    impatient.stop_timeout = 300ms;
    BoxliteOptions options;
    options.home_dir = home_->path();
    options.engine = EngineKind::Namespace;
    auto other = open_runtime(options, impatient);
    ASSERT_TRUE(other) << other.error().to_string();

    auto box = make_box(/*auto_remove=*/false);
    // A daemon (its own session, no execution of ours: those die with their connection) that
    // ignores SIGTERM; an ignored signal stays ignored across fork and exec, so its sleeps do too.
    ASSERT_EQ(run(box, BoxCommand("sh").args({"-c",
                                              "trap '' TERM; setsid sh -c 'while :; do sleep 1; done' "
                                              "</dev/null >/dev/null 2>&1 &"}))
                  .exit_code,
              0);
    const auto box_dir = home_->path() / "boxes" / box.id().str();
    const auto shim = *box.info()->pid;
    std::vector<std::int32_t> pids;
    {
        std::int32_t agent = 0;
        std::ifstream(box_dir / "agent.pid") >> agent;
        ASSERT_GT(agent, 0);
        // Every host process of the box: the agent and its descendants.
        pids.push_back(agent);
        for (std::size_t i = 0; i < pids.size(); ++i) {
            std::ifstream children(fmt::format("/proc/{}/task/{}/children", pids[i], pids[i]));
            std::int32_t child = 0;
            while (children >> child) pids.push_back(child);
        }
        ASSERT_GE(pids.size(), 2U) << "the agent and the daemon";
    }
    const auto log_before = test::read_file(box_dir / "shim.log");

    auto same = other->get(box.id().str());
    ASSERT_TRUE(same) << same.error().to_string();
    ASSERT_TRUE(same->stop()) << "stop() returns once the box is dead";
    EXPECT_EQ(box.info()->status, BoxStatus::Stopped);
    EXPECT_FALSE(detail::process_alive(shim, 0));
    for (const auto pid : pids)
        EXPECT_FALSE(detail::process_alive(pid, 0)) << "box process " << pid << " survived stop()";
    // A shim whose agent exits logs it; this one was SIGKILLed before the agent's grace ran out.
    const auto log_after = test::read_file(box_dir / "shim.log");
    EXPECT_EQ(log_after.substr(log_before.size()).find("agent exited"), std::string::npos) << log_after;
}

TEST_F(NamespaceBox, OnlyAnAutoRemoveBoxsRootIsAVolatileOverlay) {
    // volatile (Linux 5.10 and later) skips the sync of the host filesystem when the box's
    // overlay goes away; only a box whose upper layer goes with it may have it.
    utsname host{};
    ASSERT_EQ(::uname(&host), 0);
    int major = 0, minor = 0;
    std::sscanf(host.release, "%d.%d", &major, &minor);
    const bool kernel_has_volatile = major > 5 || (major == 5 && minor >= 10);
    for (const bool auto_remove : {true, false}) {
        auto box = make_box(auto_remove);
        EXPECT_EQ(run(box, BoxCommand("true")).exit_code, 0);
        std::ifstream pid_file(home_->path() / "boxes" / box.id().str() / "agent.pid");
        int agent = 0;
        pid_file >> agent;
        ASSERT_GT(agent, 0);
        std::ifstream mountinfo("/proc/" + std::to_string(agent) + "/mountinfo");
        std::string root;
        for (std::string line; std::getline(mountinfo, line);) {
            std::istringstream fields(line);
            std::string id, parent, device, source_root, mount_point;
            fields >> id >> parent >> device >> source_root >> mount_point;
            if (mount_point == "/") root = line;
        }
        ASSERT_NE(root.find(" - overlay "), std::string::npos) << root;
        EXPECT_EQ(root.find("volatile") != std::string::npos, auto_remove && kernel_has_volatile)
            << (auto_remove ? "auto-remove box: " : "kept box: ") << root;
        if (!auto_remove) {
            EXPECT_TRUE(box.stop());
        }
    }
}

TEST_F(NamespaceBox, MetricsCountTheBoxsProcesses) {
    auto box = make_box();
    auto exec = box.exec(BoxCommand("sh").args({"-c", "sleep 100 & sleep 100 & echo started; wait"}));
    ASSERT_TRUE(exec);
    auto out = exec->stdout();
    auto started = out->read_line();
    ASSERT_TRUE(started && *started && **started == "started");
    if (auto reason = test::cgroup_limits_unsupported_reason(); !reason.empty()) GTEST_SKIP() << reason;
    const auto info = test::read_file(home_->path() / "boxes" / box.id().str() / "cgroup.info");
    ASSERT_NE(info.find(" /"), std::string::npos) << "this host has cgroups, yet the box is in none:\n" << info;
    auto metrics = box.metrics();
    ASSERT_TRUE(metrics) << metrics.error().to_string();
    ASSERT_TRUE(metrics->process_count.has_value());
    EXPECT_EQ(*metrics->process_count, 4U) << "the agent, sh and two sleeps";
    ASSERT_TRUE(exec->kill());
    (void)exec->wait();
}

TEST_F(NamespaceBox, PortsOnADisabledNetworkAreRefusedBeforeAnythingRuns) {
    auto o = options(/*auto_remove=*/false);
    o.ports = {PortSpec{18080, 80, PortProtocol::Tcp, "127.0.0.1"}};
    o.network.mode = NetworkMode::Disabled;
    auto box = runtime_->create(o);
    ASSERT_TRUE(box) << box.error().to_string();
    auto started = box->start();
    ASSERT_FALSE(started);
    EXPECT_EQ(started.error().kind(), ErrorKind::Config);
    EXPECT_NE(started.error().message().find("network is disabled"), std::string::npos) << started.error().to_string();
    EXPECT_FALSE(box->info()->pid.has_value());
    EXPECT_FALSE(fs::exists(home_->path() / "boxes" / box->id().str() / "shim.log"));
}

TEST_F(NamespaceBox, DeadShimReadsAsStopped) {
    auto box = make_box(/*auto_remove=*/false);
    ASSERT_TRUE(box.start());
    const auto pid = *box.info()->pid;
    ::kill(pid, SIGKILL);
    for (int i = 0; i < 500 && detail::process_alive(pid, 0); ++i) std::this_thread::sleep_for(10ms);
    auto info = box.info();
    ASSERT_TRUE(info);
    EXPECT_NE(info->status, BoxStatus::Running);
}

// Where the host has writable memory, pids and cpu cgroups (judged from the host's cgroup
// mounts, not from what the engine reports), the limits are applied: in cgroup.info, in the
// kernel's own files, and in what runs in the box.
TEST_F(NamespaceBox, CgroupLimitsApplied) {
    if (auto reason = test::cgroup_limits_unsupported_reason(); !reason.empty()) GTEST_SKIP() << reason;
    auto o = options();
    o.memory_mib = 256;
    o.resource_limits.max_processes = 64;
    auto box = runtime_->create(o);
    ASSERT_TRUE(box);
    ASSERT_TRUE(box->start());
    const auto info_text = test::read_file(home_->path() / "boxes" / box->id().str() / "cgroup.info");
    EXPECT_NE(info_text.find("applied memory=268435456\n"), std::string::npos) << info_text;
    EXPECT_NE(info_text.find("applied pids=64\n"), std::string::npos) << info_text;
    auto dir_of = [&](const std::string& controller) {
        std::smatch line;
        const bool found = std::regex_search(info_text, line, std::regex("(^|\n)" + controller + " (/\\S+)\n"));
        return found ? line[2].str() : std::string();
    };
    const auto memory_dir = dir_of("memory");
    const auto pids_dir = dir_of("pids");
    ASSERT_NE(memory_dir, "") << info_text;
    ASSERT_NE(pids_dir, "") << info_text;
    const bool v2 = fs::exists("/sys/fs/cgroup/cgroup.controllers");
    auto kernel_value = [](const fs::path& file) {
        auto text = test::read_file(file);
        while (!text.empty() && text.back() == '\n') text.pop_back();
        return text;
    };
    EXPECT_EQ(kernel_value(fs::path(memory_dir) / (v2 ? "memory.max" : "memory.limit_in_bytes")), "268435456");
    EXPECT_EQ(kernel_value(fs::path(pids_dir) / "pids.max"), "64");
    auto cgroup = box->run(BoxCommand("cat").args({"/proc/self/cgroup"}));
    ASSERT_TRUE(cgroup);
    EXPECT_NE(cgroup->stdout_text.find("/boxlite/" + box->id().str() + "\n"), std::string::npos)
        << "what runs in the box is inside its cgroup: " << cgroup->stdout_text;
    // 100 background processes cannot fit under pids.max=64: the shell reports failed forks.
    auto forks = box->run(
        BoxCommand("sh").args({"-c", "for i in $(seq 1 100); do sleep 5 & done; kill $(jobs -p) 2>/dev/null; true"}));
    ASSERT_TRUE(forks);
    EXPECT_NE(forks->stderr_text.find("fork"), std::string::npos) << forks->stderr_text;
    auto metrics = box->metrics();
    ASSERT_TRUE(metrics) << metrics.error().to_string();
    EXPECT_GT(metrics->memory_bytes.value_or(0), 0U);
}

TEST_F(NamespaceBox, CopyInCopyOutRoundTripWithSymlinks) {
    auto box = make_box();
    test::TempDir src("boxlite-copy-src");
    fs::create_directories(src.path() / "tree/nested/deeper");
    test::write_file(src.path() / "tree/file.txt", "hello");
    test::write_file(src.path() / "tree/nested/deeper/big.bin", std::string(3 << 20, 'z'));
    fs::create_symlink("file.txt", src.path() / "tree/relative-link");
    fs::create_symlink("/etc/passwd", src.path() / "tree/absolute-link");
    fs::permissions(src.path() / "tree/file.txt", fs::perms(0600));
    ::chown((src.path() / "tree/file.txt").c_str(), 1000, 1000);

    ASSERT_TRUE(box.copy_in((src.path() / "tree").string(), "/root/"));
    auto listing = run(
        box,
        BoxCommand("sh").args(
            {"-c",
             "cd /root/tree && cat file.txt relative-link && readlink absolute-link && stat -c '%a %u' file.txt && wc -c < nested/deeper/big.bin"}));
    EXPECT_EQ(listing.stdout_text, "hellohello/etc/passwd\n600 1000\n3145728\n") << listing.stderr_text;

    test::TempDir back("boxlite-copy-back");
    ASSERT_TRUE(box.copy_out("/root/tree", (back.path() / "restored").string()));
    EXPECT_EQ(test::read_file(back.path() / "restored/file.txt"), "hello");
    EXPECT_EQ(fs::read_symlink(back.path() / "restored/relative-link"), "file.txt");
    EXPECT_EQ(fs::read_symlink(back.path() / "restored/absolute-link"), "/etc/passwd");
    EXPECT_EQ(fs::file_size(back.path() / "restored/nested/deeper/big.bin"), 3U << 20);

    // A single file to a new name.
    ASSERT_TRUE(box.copy_in((src.path() / "tree/file.txt").string(), "/tmp/renamed.txt"));
    EXPECT_EQ(run(box, BoxCommand("cat").arg("/tmp/renamed.txt")).stdout_text, "hello");
}

TEST_F(NamespaceBox, TarThatClimbsOutIsRefused) {
    auto box = make_box();
    test::TempDir src("boxlite-evil");
    test::write_file(src.path() / "payload", "gotcha");
    auto agent = box.open_agent();
    ASSERT_TRUE(agent);
    auto copied = agent->copy_in_stream("/tmp/target/", [&](tar::Writer& writer) -> BoxliteResult<void> {
        BOXLITE_TRY_VOID(writer.add_tree((src.path() / "payload").string(), "../../escaped"));
        return writer.finish();
    });
    ASSERT_FALSE(copied);
    EXPECT_NE(copied.error().message().find("escapes the target directory"), std::string::npos)
        << copied.error().to_string();
    EXPECT_NE(run(box, BoxCommand("ls").arg("/escaped")).exit_code, 0);
    EXPECT_NE(run(box, BoxCommand("ls").arg("/tmp/escaped")).exit_code, 0);
}

TEST_F(NamespaceBox, CreatorExitWithoutDetachKillsTheBox) {
    const auto helper = test::built_binary("boxlite_agent_test_helper");
    ASSERT_TRUE(fs::exists(helper));
    const auto output = test::shell(helper.string() + " start-attached " + home_->path().string() + " " +
                                    rootfs_->string());
    std::istringstream fields(output);
    std::string id;
    std::int32_t pid = 0;
    fields >> id >> pid;
    ASSERT_GT(pid, 0) << output;
    // The helper _exit()ed without any cleanup: the shim's watchdog pipe closed with it.
    for (int i = 0; i < 500 && detail::process_alive(pid, 0); ++i) std::this_thread::sleep_for(10ms);
    EXPECT_FALSE(detail::process_alive(pid, 0)) << "the box outlived its creator";
    auto info = runtime_->get_info(id);
    ASSERT_TRUE(info) << info.error().to_string();
    EXPECT_NE(info->status, BoxStatus::Running);
}

TEST_F(NamespaceBox, DetachedBoxOutlivesCreatorAndIsReattached) {
    const auto helper = test::built_binary("boxlite_agent_test_helper");
    const auto output = test::shell(helper.string() + " start-detached " + home_->path().string() + " " +
                                    rootfs_->string());
    std::istringstream fields(output);
    std::string id;
    std::int32_t pid = 0;
    fields >> id >> pid;
    ASSERT_GT(pid, 0) << output;
    std::this_thread::sleep_for(100ms);
    EXPECT_TRUE(detail::process_alive(pid, 0));
    // A second process (this one) reattaches by id and runs a command.
    auto box = runtime_->get(id);
    ASSERT_TRUE(box) << box.error().to_string();
    EXPECT_EQ(box->info()->status, BoxStatus::Running);
    auto out = box->run(BoxCommand("cat").arg("/root/marker"));
    ASSERT_TRUE(out) << out.error().to_string();
    EXPECT_EQ(out->stdout_text, "written by the creator\n");
    // ... and from yet another process.
    const auto other = test::shell(helper.string() + " exec " + home_->path().string() + " " + id +
                                   " cat /root/marker");
    EXPECT_EQ(other, "written by the creator\n");
}

TEST(EngineSelect, AutoNeverFallsBackToNamespace) {
    auto engine = make_engine(EngineKind::Auto);
    if (engine) {
        EXPECT_NE(engine->kind(), "namespace");
        return;
    }
    EXPECT_EQ(engine.error().kind(), ErrorKind::UnsupportedEngine);
    EXPECT_NE(engine.error().message().find("kvm"), std::string::npos) << engine.error().to_string();
    EXPECT_NE(engine.error().message().find("qemu"), std::string::npos) << engine.error().to_string();
    BoxliteOptions options;
    options.engine = EngineKind::Auto;
    auto selected = select_engine(options);
    ASSERT_TRUE(selected);
    EXPECT_FALSE(selected->available());
}

}  // namespace
