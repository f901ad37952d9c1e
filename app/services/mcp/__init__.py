"""Tools from MCP servers (docs/tools.md): configured in `MCP_CONFIG` (`config`), reached
through the official `mcp` SDK (`link`), offered to the model next to the built-in tools
(`source`). Modules are imported by name: `config` is read by the settings, which the rest
depends on."""
