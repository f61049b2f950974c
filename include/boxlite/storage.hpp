// The Storage concept and its value type BoxRecord: where box configs and states live, crash-safe
// and shared by processes. concepts_tests/ checks good and bad storages against it.
#pragma once

#include <boxlite/box_config.hpp>
#include <boxlite/box_id.hpp>
#include <boxlite/box_state.hpp>
#include <boxlite/error.hpp>

#include <concepts>
#include <string_view>
#include <vector>

namespace boxlite {

/// How durable a remove() must be. A box the user kept must not come back once removed, even
/// after a power loss (Durable); the removal of an auto-remove box may be taken back by a power
/// loss, because the row it leaves is one of the box's own earlier ones, which the next look at
/// the box reaps again (Relaxed; docs/performance.md, "The FULL syncs").
enum class RemoveSync { Durable, Relaxed };

/// A box's two records, as Storage returns them.
struct BoxRecord {
    BoxConfig config;
    BoxState state;
};

// ---------------------------------------------------------------------------------------------
// Storage: box config (immutable) + box state (mutable), crash-safe, shared by processes.
//
//   insert(config, state)      AlreadyExists when the id or the name is taken; atomic
//   get(id)                    NotFound when absent
//   lookup(id_or_name)         by full id, then exact name, then unique id prefix; NotFound when nothing
//                              matches, InvalidArgument when a prefix is ambiguous
//   list()                     every box, oldest first
//   update_state(id, state)    NotFound when absent
//   update_state_if(id, expected, state)
//                              compare-and-swap: stores `state` only when the stored state still
//                              equals `expected` (operator==), atomically with respect to every
//                              other writer of the same storage, in any process; true when it did,
//                              false when the state had changed, NotFound when absent. Writers that
//                              do not hold the box's lock (a reader noticing a dead engine) use it,
//                              so they never overwrite what a concurrent start() or stop() wrote
//   remove(id)                 NotFound when absent
//   remove(id, sync)           the same, as durable as `sync` asks (RemoveSync): a storage may treat
//                              Relaxed as Durable
// ---------------------------------------------------------------------------------------------
template <class S>
concept Storage = requires(S& storage, const BoxConfig& config, const BoxState& state, const BoxID& id,
                           std::string_view id_or_name) {
    { storage.insert(config, state) } -> std::same_as<BoxliteResult<void>>;
    { storage.get(id) } -> std::same_as<BoxliteResult<BoxRecord>>;
    { storage.lookup(id_or_name) } -> std::same_as<BoxliteResult<BoxRecord>>;
    { storage.list() } -> std::same_as<BoxliteResult<std::vector<BoxRecord>>>;
    { storage.update_state(id, state) } -> std::same_as<BoxliteResult<void>>;
    { storage.update_state_if(id, state, state) } -> std::same_as<BoxliteResult<bool>>;
    { storage.remove(id) } -> std::same_as<BoxliteResult<void>>;
    { storage.remove(id, RemoveSync::Relaxed) } -> std::same_as<BoxliteResult<void>>;
};

}  // namespace boxlite
