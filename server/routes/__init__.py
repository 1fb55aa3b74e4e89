"""HTTP resources, one module per route family. Each module has `add_routes(app, ...)`."""
