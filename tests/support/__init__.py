"""Test-side servers and fixtures' building blocks (real processes on 127.0.0.1, always torn down)."""
