"""Files written safely: atomic writes (temp file + rename) and checkpoints loaded with weights_only=True. Imports nothing from sweep."""
