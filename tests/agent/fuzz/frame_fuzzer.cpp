// libFuzzer target: the host's view of agent bytes — the frame decoder, then every payload
// decoder on every frame it yields. Nothing may crash, hang, or read out of bounds.
#include <boxlite/protocol/frame.hpp>
#include <boxlite/protocol/messages.hpp>

#include <cstddef>
#include <cstdint>

using namespace boxlite::protocol;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    FrameDecoder decoder;
    // Feed in two uneven pieces to exercise partial headers and payloads.
    const auto* bytes = reinterpret_cast<const std::byte*>(data);
    const std::size_t split = size > 0 ? data[0] % (size + 1) : 0;
    decoder.feed(std::span(bytes, split));
    for (int round = 0; round < 2; ++round) {
        while (true) {
            auto frame = decoder.next();
            if (!frame || !*frame) break;
            const auto& payload = (*frame)->payload;
            (void)Hello::decode(payload);
            (void)HelloAck::decode(payload);
            (void)ErrorMessage::decode(payload);
            (void)ExecRequest::decode(payload);
            (void)Started::decode(payload);
            (void)Credit::decode(payload);
            (void)SignalRequest::decode(payload);
            (void)ResizeRequest::decode(payload);
            (void)ExitStatus::decode(payload);
            (void)GuestMetrics::decode(payload);
        }
        if (round == 0) decoder.feed(std::span(bytes + split, size - split));
    }
    return 0;
}
