# Packaging is completed by the foundation issue: install(EXPORT), config, version, pkg-config.
