// Image locking (QEMU's lock bytes, so we and QEMU keep each other off a disk in use) and the
// thread-safety contract of the block backends (a device worker thread and the vCPU threads may
// call one backend at once).
#include "qcow2_test_util.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>

#include <thread>

namespace boxlite::qcow2::test {
namespace {

constexpr std::uint64_t kMiB = 1ull << 20;

bool in_use_error(const BoxliteError& error) {
    return error.kind() == ErrorKind::Storage && error.message().find("in use by another process") != std::string::npos;
}

TEST(Qcow2Lock, SecondOpenInTheSameProcessIsRefused) {
    TempDir dir;
    const auto path = dir / "disk.qcow2";
    auto writer = Qcow2Image::create(path, sized(4 * kMiB));
    ASSERT_TRUE(writer) << writer.error().to_string();
    for (bool ro : {false, true}) {
        OpenOptions options;
        options.read_only = ro;
        auto second = Qcow2Image::open(path, options);
        ASSERT_FALSE(second) << (ro ? "read-only" : "read-write") << " open of an image in use";
        EXPECT_TRUE(in_use_error(second.error())) << second.error().to_string();
    }
    // Creating over it is refused before anything is truncated.
    std::vector<std::uint8_t> data(4096, 0x42);
    ASSERT_TRUE(write_bytes(**writer, 0, data));
    ASSERT_TRUE((*writer)->flush());
    auto recreated = Qcow2Image::create(path, sized(4 * kMiB));
    ASSERT_FALSE(recreated);
    EXPECT_TRUE(in_use_error(recreated.error())) << recreated.error().to_string();
    auto back = read_bytes(**writer, 0, data.size());
    ASSERT_TRUE(back) << back.error().to_string();
    EXPECT_TRUE(*back == data);
    writer->reset();
    // Readers share the image; a writer is then kept out.
    auto reader1 = Qcow2Image::open(path, read_only());
    auto reader2 = Qcow2Image::open(path, read_only());
    ASSERT_TRUE(reader1) << reader1.error().to_string();
    ASSERT_TRUE(reader2) << reader2.error().to_string();
    auto blocked = Qcow2Image::open(path);
    ASSERT_FALSE(blocked);
    EXPECT_TRUE(in_use_error(blocked.error())) << blocked.error().to_string();
    reader1->reset();
    reader2->reset();
    auto again = Qcow2Image::open(path);
    ASSERT_TRUE(again) << again.error().to_string();
    // close() releases the lock: another process may take the image from there on.
    ASSERT_TRUE((*again)->close());
    auto after_close = Qcow2Image::open(path);
    EXPECT_TRUE(after_close) << after_close.error().to_string();
}

TEST(Qcow2Lock, AnotherProcessIsRefusedAndGetsTheImageAfterExit) {
    TempDir dir;
    const auto path = dir / "disk.qcow2";
    auto image = Qcow2Image::create(path, sized(4 * kMiB));
    ASSERT_TRUE(image) << image.error().to_string();
    auto child_result = [&]() {
        const pid_t pid = ::fork();
        if (pid == 0) {
            auto rw = Qcow2Image::open(path);
            auto ro = Qcow2Image::open(path, read_only());
            const bool refused = !rw && in_use_error(rw.error()) && !ro && in_use_error(ro.error());
            const bool opened = rw.has_value();
            ::_exit(refused ? 10 : opened ? 20 : 30);
        }
        int status = 0;
        ::waitpid(pid, &status, 0);
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    };
    EXPECT_EQ(child_result(), 10);  // refused while we hold it
    image->reset();
    EXPECT_EQ(child_result(), 20);  // free once we closed it
}

TEST(Qcow2Lock, RawDisksAreLockedToo) {
    TempDir dir;
    const auto path = dir / "disk.raw";
    auto raw = block::RawFile::create(path, kMiB);
    ASSERT_TRUE(raw) << raw.error().to_string();
    auto second = block::RawFile::open(path);
    ASSERT_FALSE(second);
    EXPECT_TRUE(in_use_error(second.error())) << second.error().to_string();
    auto recreate = block::RawFile::create(path, 2 * kMiB);
    ASSERT_FALSE(recreate);
    EXPECT_EQ((*raw)->size(), kMiB);
    EXPECT_EQ(std::filesystem::file_size(path), kMiB);  // not truncated
    raw->reset();
    auto r1 = block::RawFile::open(path, true);
    auto r2 = block::RawFile::open(path, true);
    EXPECT_TRUE(r1 && r2);
}

class QemuLock : public ::testing::Test {
protected:
    void SetUp() override {
        if (!have_qemu_img()) GTEST_SKIP() << "precondition: qemu-img (Debian qemu-utils) is not installed";
    }
    TempDir dir;
};

TEST_F(QemuLock, QemuImgRefusesAnImageWeHaveOpen) {
    const auto path = dir / "disk.qcow2";
    auto image = Qcow2Image::create(path, sized(4 * kMiB));
    ASSERT_TRUE(image) << image.error().to_string();
    std::vector<std::uint8_t> data(65536, 0x17);
    ASSERT_TRUE(write_bytes(**image, 0, data));
    ASSERT_TRUE((*image)->flush());

    const auto info = run("qemu-img info '" + path + "'");
    EXPECT_NE(info.exit_code, 0) << info.output;
    EXPECT_NE(info.output.find("lock"), std::string::npos) << info.output;
    const auto forced = run("qemu-img info -U '" + path + "'");
    EXPECT_EQ(forced.exit_code, 0) << forced.output;
    const auto writer = run("qemu-io -f qcow2 -c 'write 0 4k' '" + path + "'");
    EXPECT_NE(writer.exit_code, 0) << writer.output;

    // Read-only, we share with QEMU's readers but still keep its writers out.
    image->reset();
    auto reader = Qcow2Image::open(path, read_only());
    ASSERT_TRUE(reader) << reader.error().to_string();
    const auto info_ro = run("qemu-img info '" + path + "'");
    EXPECT_EQ(info_ro.exit_code, 0) << info_ro.output;
    const auto repair = run("qemu-img check -r leaks '" + path + "'");
    EXPECT_NE(repair.exit_code, 0) << repair.output;
    EXPECT_NE(repair.output.find("lock"), std::string::npos) << repair.output;
    reader->reset();
    expect_qemu_clean_check(path);
}

TEST_F(QemuLock, WeRefuseAnImageQemuHasOpen) {
    const auto path = dir / "disk.qcow2";
    ASSERT_EQ(run("qemu-img create -f qcow2 '" + path + "' 4M").exit_code, 0);
    // An interactive qemu-io holds the image read-write until its stdin closes; its answer to
    // one read proves the image is open (and locked) before we try.
    int to_qemu[2], from_qemu[2];
    ASSERT_EQ(::pipe(to_qemu), 0);
    ASSERT_EQ(::pipe(from_qemu), 0);
    const pid_t pid = ::fork();
    if (pid == 0) {
        ::dup2(to_qemu[0], 0);
        ::dup2(from_qemu[1], 1);
        ::dup2(from_qemu[1], 2);
        ::close(to_qemu[1]);
        ::close(from_qemu[0]);
        ::execlp("qemu-io", "qemu-io", "-f", "qcow2", path.c_str(), static_cast<char*>(nullptr));
        ::_exit(127);
    }
    ::close(to_qemu[0]);
    ::close(from_qemu[1]);
    const std::string command = "read 0 512\n";
    ASSERT_EQ(::write(to_qemu[1], command.data(), command.size()), static_cast<ssize_t>(command.size()));
    std::string answer;
    char buffer[256];
    while (answer.find("bytes at offset") == std::string::npos) {
        const ssize_t n = ::read(from_qemu[0], buffer, sizeof buffer);
        if (n <= 0) break;
        answer.append(buffer, static_cast<std::size_t>(n));
    }
    ASSERT_NE(answer.find("bytes at offset"), std::string::npos) << answer;

    for (bool ro : {false, true}) {
        OpenOptions options;
        options.read_only = ro;
        auto image = Qcow2Image::open(path, options);
        ASSERT_FALSE(image) << "opened an image qemu-io has open read-write";
        EXPECT_TRUE(in_use_error(image.error())) << image.error().to_string();
    }
    ::close(to_qemu[1]);  // qemu-io quits at end of input
    int status = 0;
    ::waitpid(pid, &status, 0);
    ::close(from_qemu[0]);
    auto image = Qcow2Image::open(path);
    EXPECT_TRUE(image) << image.error().to_string();
}

/// Several threads at once on one backend, each on its own 8 KiB stripes (so they share
/// clusters, L2 tables and refcount blocks): every thread's reads must see exactly its writes.
void hammer(block::BlockBackend& disk, std::uint64_t size, std::vector<std::uint8_t>& model) {
    constexpr unsigned kThreads = 4;
    constexpr std::uint64_t kStripe = 8192;
    std::vector<std::thread> threads;
    std::vector<std::string> failures(kThreads);
    for (unsigned t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
            std::mt19937_64 rng(1000 + t);
            const std::uint64_t stripes = size / kStripe / kThreads;
            for (int i = 0; i < 1500 && failures[t].empty(); ++i) {
                const std::uint64_t stripe = (rng() % stripes) * kThreads + t;
                const std::uint64_t len = 512 * (1 + rng() % (kStripe / 512));
                const std::uint64_t at = stripe * kStripe + 512 * (rng() % ((kStripe - len) / 512 + 1));
                const auto op = rng() % 10;
                if (op < 5) {
                    std::vector<std::uint8_t> data(len);
                    fill_pattern(data, rng);
                    if (auto r = write_bytes(disk, at, data); !r) failures[t] = r.error().to_string();
                    std::copy(data.begin(), data.end(), model.begin() + static_cast<std::ptrdiff_t>(at));
                } else if (op < 9) {
                    auto back = read_bytes(disk, at, len);
                    if (!back) {
                        failures[t] = back.error().to_string();
                    } else if (!std::equal(back->begin(), back->end(),
                                           model.begin() + static_cast<std::ptrdiff_t>(at))) {
                        failures[t] = fmt::format("thread {} read stale data at {}", t, at);
                    }
                } else if (rng() % 2 == 0) {
                    if (auto r = disk.flush(); !r) failures[t] = r.error().to_string();
                } else {
                    if (auto r = disk.write_zeroes(at, len); !r) failures[t] = r.error().to_string();
                    std::fill_n(model.begin() + static_cast<std::ptrdiff_t>(at), len, 0);
                }
            }
        });
    }
    for (auto& thread : threads) thread.join();
    for (const auto& failure : failures) EXPECT_TRUE(failure.empty()) << failure;
}

TEST(BackendThreads, Qcow2ImageServesConcurrentRequests) {
    TempDir dir;
    constexpr std::uint64_t kSize = 16 * kMiB;
    auto options = sized(kSize, 14);  // 16 KiB clusters: every cluster is shared by two threads
    auto image = Qcow2Image::create(dir / "disk.qcow2", options);
    ASSERT_TRUE(image) << image.error().to_string();
    std::vector<std::uint8_t> model(kSize, 0);
    hammer(**image, kSize, model);
    auto whole = read_bytes(**image, 0, kSize);
    ASSERT_TRUE(whole);
    EXPECT_TRUE(*whole == model);
    ASSERT_TRUE((*image)->close());
    auto report = (*image)->check();
    ASSERT_TRUE(report) << report.error().to_string();
    EXPECT_TRUE(report->clean()) << (report->messages.empty() ? "" : report->messages.front());
    image->reset();
    if (have_qemu_img()) expect_qemu_clean_check(dir / "disk.qcow2");
}

TEST(BackendThreads, RawFileServesConcurrentRequests) {
    TempDir dir;
    constexpr std::uint64_t kSize = 4 * kMiB;
    auto raw = block::RawFile::create(dir / "disk.raw", kSize);
    ASSERT_TRUE(raw) << raw.error().to_string();
    std::vector<std::uint8_t> model(kSize, 0);
    hammer(**raw, kSize, model);
    auto whole = read_bytes(**raw, 0, kSize);
    ASSERT_TRUE(whole);
    EXPECT_TRUE(*whole == model);
}

}  // namespace
}  // namespace boxlite::qcow2::test
