// Must not compile: BasicRuntime rejects EngineWithoutKill at the point of use,
// with a diagnostic naming the concept that failed. With BOXLITE_MNC_CONTROL the same code
// uses the good policy and must compile, so the failure is known to come from that one member.
// EXPECT: (template constraint failure.*BasicRuntime.*required expression [^ ]*engine\.kill\(handle\)[^ ]* is invalid)|(constraints not satisfied for class template 'BasicRuntime'.*does not satisfy 'Engine'.*'engine\.kill\(handle\)' would be invalid)
#include "policies.hpp"

#include <boxlite/detail/runtime_fwd.hpp>

namespace boxlite::concept_tests {
#ifdef BOXLITE_MNC_CONTROL
using Runtime = BasicRuntime<GoodEngine, GoodTransport, GoodStorage>;
#else
using Runtime = BasicRuntime<EngineWithoutKill, GoodTransport, GoodStorage>;
#endif
[[maybe_unused]] Runtime* runtime = nullptr;
}  // namespace boxlite::concept_tests
