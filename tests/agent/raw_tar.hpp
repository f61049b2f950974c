// Hand-made ustar archives for tests of hostile input: any name, type, mode, owner and link
// target, in any order, with none of the sanity a real tar writer would add; and
// extract_archive(), the extractor fed from such an archive in memory.
#pragma once

#include <boxlite/error.hpp>
#include "protocol/tar.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <span>
#include <string>
#include <utility>

namespace boxlite::test {

/// An entry's mode, owner and mtime (outside RawTar: a nested class with member initializers
/// cannot be a default argument inside its enclosing class).
struct TarMeta {
    unsigned mode = 0644;
    unsigned uid = 0;
    unsigned gid = 0;
    std::uint64_t mtime = 1000000000;
};

class RawTar {
public:
    using Meta = TarMeta;

    RawTar& dir(const std::string& name, unsigned mode = 0755, Meta meta = {}) {
        meta.mode = mode;
        return entry(name, '5', meta, {}, {});
    }
    RawTar& file(const std::string& name, const std::string& data, unsigned mode = 0644, Meta meta = {}) {
        meta.mode = mode;
        return entry(name, '0', meta, data, {});
    }
    RawTar& symlink(const std::string& name, const std::string& target, Meta meta = {}) {
        meta.mode = 0777;
        return entry(name, '2', meta, {}, target);
    }
    RawTar& hardlink(const std::string& name, const std::string& target) { return entry(name, '1', {}, {}, target); }

    RawTar& entry(const std::string& name, char type, const Meta& meta, const std::string& data,
                  const std::string& link) {
        char h[512] = {};
        std::memcpy(h, name.data(), std::min<std::size_t>(name.size(), 100));
        octal(h + 100, 8, meta.mode);
        octal(h + 108, 8, meta.uid);
        octal(h + 116, 8, meta.gid);
        octal(h + 124, 12, data.size());
        octal(h + 136, 12, meta.mtime);
        std::memset(h + 148, ' ', 8);
        h[156] = type;
        std::memcpy(h + 157, link.data(), std::min<std::size_t>(link.size(), 100));
        std::memcpy(h + 257, "ustar", 6);
        std::memcpy(h + 263, "00", 2);
        unsigned sum = 0;
        for (char c : h) sum += static_cast<unsigned char>(c);
        octal(h + 148, 7, sum);
        h[155] = ' ';
        bytes_.append(h, sizeof h);
        bytes_ += data;
        bytes_.append((512 - data.size() % 512) % 512, '\0');
        return *this;
    }

    /// The archive with its two end blocks.
    [[nodiscard]] std::string finish() const { return bytes_ + std::string(1024, '\0'); }

private:
    /// width - 1 zero-padded octal digits and a NUL.
    static void octal(char* field, std::size_t width, std::uint64_t value) {
        field[width - 1] = '\0';
        for (std::size_t i = width - 1; i-- > 0;) {
            field[i] = static_cast<char>('0' + (value & 7U));
            value >>= 3;
        }
    }
    std::string bytes_;
};

/// Extracts `archive` (the bytes of a tar stream) into `dest` with the box's tar extractor.
inline BoxliteResult<void> extract_archive(const std::string& archive, const std::filesystem::path& dest,
                                           tar::ExtractOptions options = {}) {
    std::size_t offset = 0;
    tar::Extractor extractor(
        [&](std::span<std::byte> buf) -> BoxliteResult<std::size_t> {
            const auto n = std::min(buf.size(), archive.size() - offset);
            std::memcpy(buf.data(), archive.data() + offset, n);
            offset += n;
            return n;
        },
        std::move(options));
    return extractor.extract_to(dest.string());
}

}  // namespace boxlite::test
