// pull, images, images rm, images prune, load — over the image store (include/boxlite/image).
#include "cli/commands_internal.hpp"

namespace boxlite::cli {

namespace {
tl::unexpected<BoxliteError> no_image_store(const char* what) {
    return fail(ErrorKind::Unsupported, "'{}' needs the image store, which this build does not have yet", what);
}
}  // namespace

RuntimeSettings cli_runtime_settings(const Context&) { return RuntimeSettings{}; }

BoxliteResult<int> cmd_pull(Context&) { return no_image_store("pull"); }
BoxliteResult<int> cmd_images(Context&) { return no_image_store("images"); }
BoxliteResult<int> cmd_images_rm(Context&) { return no_image_store("images rm"); }
BoxliteResult<int> cmd_images_prune(Context&) { return no_image_store("images prune"); }
BoxliteResult<int> cmd_load(Context&) { return no_image_store("load"); }
std::optional<std::size_t> image_count(Context&) { return std::nullopt; }

}  // namespace boxlite::cli
