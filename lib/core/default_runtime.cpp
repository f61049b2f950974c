// The explicit instantiation of BoxliteRuntime (AnyEngine, AnyTransport, SqliteStorage) that
// runtime.hpp declares extern: compiled here once instead of in every file that uses it.
#include <boxlite/boxlite.hpp>

namespace boxlite {

template class detail::RuntimeCore<AnyEngine, AnyTransport, SqliteStorage>;
template class BasicBox<AnyEngine, AnyTransport, SqliteStorage>;
template class BasicRuntime<AnyEngine, AnyTransport, SqliteStorage>;

}  // namespace boxlite
