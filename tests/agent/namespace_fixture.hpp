// The fixture of the namespace-engine tests (namespace_test.cpp, isolation_test.cpp): a runtime
// on the namespace engine in a fresh home, the built shim and agent, a busybox root filesystem.
#pragma once

#include <boxlite/boxlite.hpp>

#include "support/support.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <optional>

namespace boxlite::test {

class NamespaceBox : public ::testing::Test {
protected:
    void SetUp() override {
        if (!is_root())
            GTEST_SKIP() << "precondition: not root (the namespace engine needs namespaces, overlayfs, cgroups)";
        rootfs_ = busybox_rootfs();
        if (!rootfs_) GTEST_SKIP() << "precondition: busybox-static is not installed (apt-get install busybox-static)";
        ::setenv("BOXLITE_SHIM", built_binary("boxlite-shim").c_str(), 1);
        ::setenv("BOXLITE_AGENT", built_binary("boxlite-agent").c_str(), 1);
        home_.emplace();
        BoxliteOptions options;
        options.home_dir = home_->path();
        options.engine = EngineKind::Namespace;
        auto runtime = open_runtime(options);
        ASSERT_TRUE(runtime) << runtime.error().to_string();
        ASSERT_TRUE(runtime->engine().available()) << runtime->engine().available().error().to_string();
        runtime_.emplace(std::move(*runtime));
    }
    void TearDown() override {
        if (runtime_) {
            if (auto boxes = runtime_->list_info()) {
                for (const auto& info : *boxes) (void)runtime_->remove(info.id.str(), true);
            }
        }
        runtime_.reset();
        home_.reset();
    }

    BoxOptions options(bool auto_remove = true) const {
        BoxOptions o;
        o.rootfs = RootfsSpec::path(*rootfs_);
        o.auto_remove = auto_remove;
        o.env = {{"BOX_LEVEL", "box"}};
        return o;
    }

    LiteBox make_box(bool auto_remove = true, bool detach = false) {
        auto o = options(auto_remove);
        o.detach = detach;
        auto box = runtime_->create(o);
        EXPECT_TRUE(box) << box.error().to_string();
        return *box;
    }

    ExecOutput run(LiteBox& box, const BoxCommand& command) {
        auto out = box.run(command);
        EXPECT_TRUE(out) << out.error().to_string();
        return out ? *out : ExecOutput{};
    }

    std::optional<fs::path> rootfs_;
    std::optional<TempHome> home_;
    std::optional<BoxliteRuntime> runtime_;
};

}  // namespace boxlite::test
