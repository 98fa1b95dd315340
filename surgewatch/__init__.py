"""surgewatch's headless core: one plan of sources, one state, one set of fleet figures, the guard, the
recorder and the CLIs. It never imports Textual or `tui`: the UI plugs into the CLI as the `surgewatch.front_ends`
entry point (surgewatch/frontends.py); `collectors/` (sensing) and `quotas/` (the control plane) never import it."""
