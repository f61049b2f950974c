// Must not compile: BasicRuntime rejects StorageWithoutLookup at the point of use,
// with a diagnostic naming the concept that failed. With BOXLITE_MNC_CONTROL the same code
// uses the good policy and must compile, so the failure is known to come from that one member.
// EXPECT: (template constraint failure.*BasicRuntime.*required expression [^ ]*storage\.lookup\(id_or_name\)[^ ]* is invalid)|(constraints not satisfied for class template 'BasicRuntime'.*does not satisfy 'Storage'.*'storage\.lookup\(id_or_name\)' would be invalid)
#include "policies.hpp"

#include <boxlite/detail/runtime_fwd.hpp>

namespace boxlite::concept_tests {
#ifdef BOXLITE_MNC_CONTROL
using Runtime = BasicRuntime<GoodEngine, GoodTransport, GoodStorage>;
#else
using Runtime = BasicRuntime<GoodEngine, GoodTransport, StorageWithoutLookup>;
#endif
[[maybe_unused]] Runtime* runtime = nullptr;
}  // namespace boxlite::concept_tests
