"""One deployment (may import: core … trust): the release registry, the workspace, artifacts, evaluation sets, key
rotation."""
