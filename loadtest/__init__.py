"""Load generation and side-by-side benchmarks for Flotilla."""
