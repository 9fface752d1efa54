"""Test helpers shared by every test package: model fixtures and real server processes."""
