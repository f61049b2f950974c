// The three policies a box is parameterized over, as C++20 concepts, one per header:
//
//   template <Engine E, Transport T, Storage S> class BasicRuntime;
//
//   <boxlite/engine.hpp>     Engine (+ PerKindEngine), RootfsKind, EngineLaunch, EngineStartTimings,
//                            EngineMetrics
//   <boxlite/transport.hpp>  ByteStream, Transport
//   <boxlite/storage.hpp>    Storage, BoxRecord
//
// This header includes all three.
#pragma once

#include <boxlite/engine.hpp>
#include <boxlite/storage.hpp>
#include <boxlite/transport.hpp>
