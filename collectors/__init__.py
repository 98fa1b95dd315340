"""The sensing layer: collectors that return immutable samples. Never imports the UI."""
