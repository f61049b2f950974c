// A binary a box can execute and never write.
//
// The namespace box's init executes the agent from a file descriptor opened on the host before
// the pivot (nothing is added to the box's filesystem). A process in the box can reach that file
// again through /proc/<agent>/exe; were it writable there, a box could replace the host's agent
// binary and run code as root on the host at the next box start (runc's CVE-2019-5736). So the
// descriptor must name a file that cannot be written through any path the box can reach:
//
//   ReadOnlyOverlay  an overlayfs mount made with the mount API (fsopen/fsconfig/fsmount) and
//                    never attached to any mount namespace, over the binary's folder and, as
//                    the second lower layer overlayfs needs without an upper one, a folder of
//                    the caller's (the box's own folder). An overlay without an upper layer
//                    cannot be written or remounted writable, and the file is the host's page
//                    cache: nothing is copied, and every box shares the pages. runc 1.2 protects
//                    its binary the same way.
//   MemfdCopy        a copy in a memfd, sealed against writes, shrinking and growing. About 1 ms
//                    of copying per box start, and the copy's pages (2.3 MB for the agent) stay
//                    resident for as long as the box runs.
//
// open_sealed_executable() tries them in that order: a kernel without the mount API or
// overlayfs, a folder overlayfs refuses (the two folders nest), or any other failure of the
// overlay falls back to the copy; `fallback` then says why.
#pragma once

#include "base/fd.hpp"

#include <string>

namespace boxlite::jailer {

enum class SealMethod { ReadOnlyOverlay, MemfdCopy };

struct SealedExecutable {
    base::OwnedFd fd;  // O_RDONLY, close-on-exec: for execveat(fd, "", ..., AT_EMPTY_PATH)
    SealMethod method = SealMethod::MemfdCopy;
    std::string fallback;  // why the overlay was not used (empty when it was, or not tried)
};

/// `binary` sealed as above; `spare_dir` is the overlay's second lower layer (any folder that
/// neither contains nor is inside the binary's folder; its contents are never looked up).
/// `prefer` MemfdCopy skips the overlay. On failure returns an invalid fd and sets `error`.
SealedExecutable open_sealed_executable(const std::string& binary, const std::string& spare_dir, std::string& error,
                                        SealMethod prefer = SealMethod::ReadOnlyOverlay);

}  // namespace boxlite::jailer
