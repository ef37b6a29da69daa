pytest_plugins = ["shared.testing.plugin", "shared.testing.mesh_fixtures"]
