// Must not compile: BasicRuntime rejects StorageWithBoolRemove at the point of use,
// with a diagnostic naming the concept that failed. With BOXLITE_MNC_CONTROL the same code
// uses the good policy and must compile, so the failure is known to come from that one member.
// EXPECT: (template constraint failure.*BasicRuntime.*storage\.remove\(id\)[^ ]* does not satisfy return-type-requirement)|(constraints not satisfied for class template 'BasicRuntime'.*does not satisfy 'Storage'.*type constraint 'std::same_as<_Bool, BoxliteResult<void> ?>' was not satisfied)
#include "policies.hpp"

#include <boxlite/detail/runtime_fwd.hpp>

namespace boxlite::concept_tests {
#ifdef BOXLITE_MNC_CONTROL
using Runtime = BasicRuntime<GoodEngine, GoodTransport, GoodStorage>;
#else
using Runtime = BasicRuntime<GoodEngine, GoodTransport, StorageWithBoolRemove>;
#endif
[[maybe_unused]] Runtime* runtime = nullptr;
}  // namespace boxlite::concept_tests
