"""The console (Textual) and the `surgewatch` command. Import Textual lazily: the CLI must start fast."""
