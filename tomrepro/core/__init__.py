"""Core data layer: configs, tasks, replay buffers and their files. Imports nothing above it."""
