"""Host interfaces a guest reaches through WIT imports: one module each, one pooled client each."""
