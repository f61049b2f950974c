// The declaration of BasicRuntime with its constraints, for code that only names runtime types
// (and for the must-not-compile tests, which need the constraint check without the whole
// runtime).
#pragma once

#include <boxlite/engine.hpp>
#include <boxlite/storage.hpp>
#include <boxlite/transport.hpp>

namespace boxlite {

template <Engine E, Transport T, Storage S>
class BasicRuntime;

}  // namespace boxlite
