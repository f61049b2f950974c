// The Transport concept and the ByteStream it yields: how the host reaches a guest agent at an
// engine's endpoint (EngineHandle::endpoint). concepts_tests/ checks good and bad transports.
#pragma once

#include <boxlite/error.hpp>

#include <chrono>
#include <concepts>
#include <cstddef>
#include <span>
#include <string_view>

namespace boxlite {

// ---------------------------------------------------------------------------------------------
// ByteStream: a connected, bidirectional, blocking byte stream to a guest agent.
//
//   read_some(buf)    reads 1..buf.size() bytes; 0 means the peer closed (EOF)
//   write_all(data)   writes every byte or fails
//   shutdown_write()  half-close: the peer reads EOF, we can still read
//   close()           closes both directions; a read_some blocked in another thread returns
//   native_handle()   a pollable file descriptor, or -1
// ---------------------------------------------------------------------------------------------
template <class S>
concept ByteStream = std::movable<S> &&
    requires(S& stream, std::span<std::byte> buffer, std::span<const std::byte> data) {
    { stream.read_some(buffer) } -> std::same_as<BoxliteResult<std::size_t>>;
    { stream.write_all(data) } -> std::same_as<BoxliteResult<void>>;
    { stream.shutdown_write() } -> std::same_as<BoxliteResult<void>>;
    { stream.close() } -> std::same_as<void>;
    { stream.native_handle() } -> std::same_as<int>;
};

// ---------------------------------------------------------------------------------------------
// Transport: connects to an agent endpoint (EngineHandle::endpoint) and yields a ByteStream.
//
//   stream_type           the ByteStream it yields
//   connect(ep, timeout)  retries until the agent accepts or `timeout` passes; RpcTransport
//                         error naming the endpoint otherwise; InvalidArgument when the
//                         endpoint's scheme is not this transport's
// ---------------------------------------------------------------------------------------------
template <class T>
concept Transport = requires(T& transport, std::string_view endpoint, std::chrono::milliseconds timeout) {
    typename T::stream_type;
    requires ByteStream<typename T::stream_type>;
    { transport.connect(endpoint, timeout) } -> std::same_as<BoxliteResult<typename T::stream_type>>;
};

}  // namespace boxlite
