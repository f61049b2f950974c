// MemoryStorage: the Storage policy for tests and benchmarks — the same semantics as
// SqliteStorage (uniqueness, lookup rules, ordering, errors), kept in a map in this process.
// Thread-safe. Nothing touches the disk.
#pragma once

#include <boxlite/concepts.hpp>
#include <boxlite/error.hpp>
#include <boxlite/storage/lookup.hpp>

#include <algorithm>
#include <map>
#include <memory>
#include <mutex>
#include <string_view>
#include <vector>

namespace boxlite {

class MemoryStorage {
public:
    MemoryStorage() : data_(std::make_shared<Data>()) {}

    // Copies share the same boxes, as two SqliteStorage objects on one home do.

    BoxliteResult<void> insert(const BoxConfig& config, const BoxState& state) {
        std::lock_guard lock(data_->mutex);
        if (data_->boxes.contains(config.id)) {
            return fail(ErrorKind::AlreadyExists, "box with id {} already exists", config.id);
        }
        if (config.name) {
            for (const auto& [id, record] : data_->boxes) {
                if (record.config.name == config.name) {
                    return fail(ErrorKind::AlreadyExists, "box with name '{}' already exists ({})", *config.name, id);
                }
            }
        }
        data_->boxes.emplace(config.id, BoxRecord{config, state});
        return {};
    }

    BoxliteResult<BoxRecord> get(const BoxID& id) const {
        std::lock_guard lock(data_->mutex);
        auto it = data_->boxes.find(id);
        if (it == data_->boxes.end()) return detail::not_found(id.view());
        return it->second;
    }

    BoxliteResult<BoxRecord> lookup(std::string_view id_or_name) const {
        std::lock_guard lock(data_->mutex);
        const bool id_like = BoxID::is_valid_prefix(id_or_name);
        const auto prefix = id_like ? detail::normalize_id_prefix(id_or_name) : std::string();
        if (id_like) {
            for (const auto& [id, record] : data_->boxes) {
                if (id.view() == prefix) return record;
            }
        }
        for (const auto& [id, record] : data_->boxes) {
            if (record.config.name && *record.config.name == id_or_name) return record;
        }
        if (!id_like) return detail::not_found(id_or_name);
        std::vector<BoxRecord> candidates;
        for (const auto& [id, record] : data_->boxes) {
            if (id.view().starts_with(prefix)) candidates.push_back(record);
        }
        const auto total = candidates.size();
        return detail::single_prefix_match(id_or_name, std::move(candidates), total);
    }

    /// Oldest first: ULIDs sort by creation time, ties broken by created_at.
    BoxliteResult<std::vector<BoxRecord>> list() const {
        std::lock_guard lock(data_->mutex);
        std::vector<BoxRecord> out;
        out.reserve(data_->boxes.size());
        for (const auto& [id, record] : data_->boxes) out.push_back(record);
        std::stable_sort(out.begin(), out.end(), [](const BoxRecord& a, const BoxRecord& b) {
            return a.config.created_at < b.config.created_at;
        });
        return out;
    }

    BoxliteResult<void> update_state(const BoxID& id, const BoxState& state) {
        std::lock_guard lock(data_->mutex);
        auto it = data_->boxes.find(id);
        if (it == data_->boxes.end()) return detail::not_found(id.view());
        it->second.state = state;
        return {};
    }

    BoxliteResult<bool> update_state_if(const BoxID& id, const BoxState& expected, const BoxState& state) {
        std::lock_guard lock(data_->mutex);
        auto it = data_->boxes.find(id);
        if (it == data_->boxes.end()) return detail::not_found(id.view());
        if (it->second.state != expected) return false;
        it->second.state = state;
        return true;
    }

    /// Nothing here outlives the process, so every RemoveSync is the same.
    BoxliteResult<void> remove(const BoxID& id, RemoveSync /*sync*/ = RemoveSync::Durable) {
        std::lock_guard lock(data_->mutex);
        if (data_->boxes.erase(id) == 0) return detail::not_found(id.view());
        return {};
    }

private:
    struct Data {
        std::mutex mutex;
        std::map<BoxID, BoxRecord> boxes;
    };
    std::shared_ptr<Data> data_;
};

static_assert(Storage<MemoryStorage>);

}  // namespace boxlite
