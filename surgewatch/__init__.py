"""surgewatch's headless core: one plan of sources, one state, one set of fleet figures, the guard, the
recorder and the CLIs. It never imports Textual or `tui` (the CLI modules that start a front end import it
lazily); `collectors/` (sensing) and `quotas/` (the control plane) never import it."""
