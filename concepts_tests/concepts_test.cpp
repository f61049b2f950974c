// The policy concepts, stated as positive and negative cases side by side.
#include "policies.hpp"

#include <boxlite/engine/any_engine.hpp>
#include <boxlite/engine/mock_engine.hpp>
#include <boxlite/runtime.hpp>
#include <boxlite/storage/memory_storage.hpp>
#include <boxlite/storage/sqlite_storage.hpp>
#include <boxlite/transport/any_transport.hpp>
#include <boxlite/transport/fd_stream.hpp>
#include <boxlite/transport/pipe_transport.hpp>

namespace boxlite::concept_tests {

// Engine
static_assert(Engine<GoodEngine>);
static_assert(Engine<MockEngine>);
static_assert(Engine<AnyEngine>);
static_assert(!Engine<EngineWithoutKill>);
static_assert(!Engine<EngineWithPlainStart>);
static_assert(!Engine<EngineWithMutableIsAlive>);
static_assert(!Engine<EngineWithStringRootfsKind>);
static_assert(!Engine<GoodTransport>);

// PerKindEngine: an engine that makes engines of other kinds (a box keeps its engine).
static_assert(PerKindEngine<GoodPerKindEngine>);
static_assert(PerKindEngine<AnyEngine>);
static_assert(!PerKindEngine<GoodEngine>);
static_assert(!PerKindEngine<MockEngine>);
static_assert(!PerKindEngine<EngineForOtherType>);

// ByteStream
static_assert(ByteStream<FdStream>);
static_assert(ByteStream<AnyStream>);
static_assert(!ByteStream<StreamWithoutShutdown>);
static_assert(!ByteStream<int>);

// Transport
static_assert(Transport<GoodTransport>);
static_assert(Transport<PipeTransport>);
static_assert(Transport<AnyTransport>);
static_assert(!Transport<TransportWithoutStreamType>);
static_assert(!Transport<TransportWithBadStream>);
static_assert(!Transport<TransportWithoutTimeout>);
static_assert(!Transport<GoodEngine>);

// Storage
static_assert(Storage<GoodStorage>);
static_assert(Storage<MemoryStorage>);
static_assert(Storage<SqliteStorage>);
static_assert(!Storage<StorageWithoutLookup>);
static_assert(!Storage<StorageWithBoolRemove>);
static_assert(!Storage<StorageWithoutCompareAndSwap>);
static_assert(!Storage<GoodEngine>);

}  // namespace boxlite::concept_tests

namespace boxlite {
// A runtime over the minimal policies instantiates fully: the concepts are all it needs.
template class BasicRuntime<concept_tests::GoodEngine, concept_tests::GoodTransport, concept_tests::GoodStorage>;
template class BasicRuntime<MockEngine, PipeTransport, MemoryStorage>;
}  // namespace boxlite

int main() { return 0; }
